//! Latency and activity: calls, errors by status class and duration percentiles, per cluster,
//! user, verb, resource or namespace, over time — behind `ztk audit stats` and the console's
//! insights page.
//!
//! **Rollups.** Reading a million calls to answer one question takes seconds, so the store
//! keeps per-minute rollups (`call_rollups`): for each minute and combination of the filterable
//! fields (user, cluster, namespace, resource, subresource, verb, access method, status), the
//! number of calls, their total and slowest duration (with the slowest call's id), and a
//! histogram of durations (16 buckets per doubling: a percentile read from it is within 2.2 %
//! of the exact one). The gateway's own records are rolled up by the gateway's upkeep from the
//! write sequence (`roll_up`: every call with `seq` above `rollup_state.through_seq`, in one
//! transaction with moving that mark, so a crash never counts a call twice or not at all); the
//! clients' shipped records (the client-measured durations) in ingest's own transaction.
//!
//! **The hourly tier** (`call_rollups_by`): per hour, grouping field and value of it, the same
//! sums and the calls per status class, made from the minute rollups once the hour ended
//! `BY_CLOSE` ago (`advance_by_tier`; `rollup_state.by_through` marks how far; a minute cell
//! written later for an hour below the mark goes to the tier too). It answers the whole hours of
//! questions filtered by time only, over hourly or longer intervals: a month is 720 rows per
//! value instead of one per minute and combination of every field.
//!
//! **Answers are exact about which calls they count**: whole hours (where the tier can answer)
//! and whole minutes inside the range come from rollups, the partial minutes at its edges and
//! the calls not rolled up yet are read from the calls themselves. Filters rollups cannot
//! answer (command text, command id, minimum duration) read the matching calls themselves. The
//! slowest calls are the slowest of each rollup cell read: the slowest is exact; two slow calls
//! of one cell show as one.

use std::collections::{BTreeMap, HashMap};

use crate::args;
use crate::db::{Db, DbError, Param, Row, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::filter::Filter;
use super::model::{CallRow, IN_PROGRESS, STREAM_OPEN};

pub const MIGRATION: &str = r#"
-- Per-minute rollups of calls for latency and activity (src/audit/stats.rs). Derived data:
-- not in the chain; source 0 is the gateway's (or this store's) own records, 1 the clients'.
CREATE TABLE call_rollups (
    time_us INTEGER NOT NULL,
    source INTEGER NOT NULL,
    user TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    verb TEXT NOT NULL,
    access_method TEXT NOT NULL,
    status INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    sum_us INTEGER NOT NULL,
    max_us INTEGER NOT NULL,
    max_id TEXT NOT NULL,
    hist BLOB NOT NULL
);
CREATE INDEX call_rollups_time ON call_rollups(time_us);
CREATE TABLE rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1), through_seq INTEGER NOT NULL);
INSERT INTO rollup_state (id, through_seq) VALUES (1, 0);
"#;

/// The hourly tier per grouping field: for each hour, field (`By::ALL`'s index) and value of
/// that field, the same sums as `call_rollups`, with the calls per status class. An unfiltered
/// question over days reads one row per hour and value here instead of one per minute and
/// combination of every field. Hours below `rollup_state.by_through` are in it: made from the
/// minute rollups once an hour is `BY_CLOSE` old (`advance_by_tier`), and a minute cell written
/// later for such an hour is written to it too.
pub const BY_MIGRATION: &str = r#"
CREATE TABLE call_rollups_by (
    time_us INTEGER NOT NULL,
    source INTEGER NOT NULL,
    by_field INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    calls INTEGER NOT NULL,
    sum_us INTEGER NOT NULL,
    max_us INTEGER NOT NULL,
    max_id TEXT NOT NULL,
    hist BLOB NOT NULL,
    s1xx INTEGER NOT NULL,
    s2xx INTEGER NOT NULL,
    s3xx INTEGER NOT NULL,
    s4xx INTEGER NOT NULL,
    s5xx INTEGER NOT NULL,
    serr INTEGER NOT NULL
);
CREATE INDEX call_rollups_by_time ON call_rollups_by(by_field, time_us);
ALTER TABLE rollup_state ADD COLUMN by_through INTEGER NOT NULL DEFAULT 0;
"#;

/// [`BY_MIGRATION`] in PostgreSQL's types.
pub const BY_MIGRATION_POSTGRES: &str = r#"
CREATE TABLE call_rollups_by (
    time_us BIGINT NOT NULL,
    source BIGINT NOT NULL,
    by_field BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    calls BIGINT NOT NULL,
    sum_us BIGINT NOT NULL,
    max_us BIGINT NOT NULL,
    max_id TEXT NOT NULL,
    hist BYTEA NOT NULL,
    s1xx BIGINT NOT NULL,
    s2xx BIGINT NOT NULL,
    s3xx BIGINT NOT NULL,
    s4xx BIGINT NOT NULL,
    s5xx BIGINT NOT NULL,
    serr BIGINT NOT NULL
);
CREATE INDEX call_rollups_by_time ON call_rollups_by(by_field, time_us);
ALTER TABLE rollup_state ADD COLUMN by_through BIGINT NOT NULL DEFAULT 0;
"#;

const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// An hour goes into the tier once it ended this long ago: most of its late records (long
/// calls end later, clients ship later) are rolled up by then, and fewer come as extra rows.
const BY_CLOSE: i64 = 2 * HOUR_US;
/// Histogram buckets per doubling of the duration.
const PER_DOUBLING: f64 = 16.0;

/// A histogram of durations (µs) on a logarithmic scale: dense counts from its lowest bucket
/// (durations span a few hundred buckets at most, and merging by index is what makes reading
/// rollups fast).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// The bucket of `counts[0]`.
    lo: u16,
    counts: Vec<u64>,
}

impl PartialEq for Histogram {
    fn eq(&self, other: &Histogram) -> bool {
        self.nonzero().eq(other.nonzero())
    }
}

impl Histogram {
    fn bucket(us: i64) -> u16 {
        if us <= 1 {
            0
        } else {
            ((us as f64).log2() * PER_DOUBLING) as u16 + 1
        }
    }

    /// The middle (geometric) of a bucket's range.
    fn value(bucket: u16) -> i64 {
        if bucket == 0 {
            return 1;
        }
        let low = f64::from(bucket - 1) / PER_DOUBLING;
        2f64.powf(low + 0.5 / PER_DOUBLING).round() as i64
    }

    /// (bucket, count) of the buckets that hold calls, in order.
    fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.lo + i as u16, *n))
    }

    fn add_bucket(&mut self, bucket: u16, n: u64) {
        if self.counts.is_empty() {
            self.lo = bucket;
            self.counts.push(n);
            return;
        }
        if bucket < self.lo {
            let grow = usize::from(self.lo - bucket);
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = bucket;
        }
        let at = usize::from(bucket - self.lo);
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    pub fn add(&mut self, us: i64, n: u64) {
        self.add_bucket(Self::bucket(us), n);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in other.nonzero() {
            self.add_bucket(b, n);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The duration below which a fraction `q` of the calls fall (None when empty).
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in self.nonzero() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(b));
            }
        }
        None
    }

    /// Varints: bucket delta, count; repeated.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.counts.len() * 3);
        let mut last = 0u16;
        for (b, n) in self.nonzero() {
            varint(&mut out, u64::from(b - last));
            varint(&mut out, n);
            last = b;
        }
        out
    }

    #[cfg(test)]
    fn decode(bytes: &[u8]) -> Histogram {
        let mut h = Histogram::default();
        h.merge_encoded(bytes);
        h
    }

    fn add_buckets(&mut self, buckets: &[(u16, u64)]) {
        for (b, n) in buckets {
            self.add_bucket(*b, *n);
        }
    }

    /// Adds an encoded histogram's counts (`encode`) without building it first.
    #[cfg(test)]
    fn merge_encoded(&mut self, bytes: &[u8]) {
        let mut buckets = Vec::new();
        decode_into(bytes, &mut buckets);
        self.add_buckets(&buckets);
    }
}

/// An encoded histogram's (bucket, count) pairs into `out` (emptied first).
fn decode_into(bytes: &[u8], out: &mut Vec<(u16, u64)>) {
    out.clear();
    let mut i = 0;
    let mut bucket = 0u64;
    while i < bytes.len() {
        let Some(delta) = read_varint(bytes, &mut i) else {
            break;
        };
        let Some(n) = read_varint(bytes, &mut i) else {
            break;
        };
        bucket += delta;
        out.push((bucket.min(u64::from(u16::MAX)) as u16, n));
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    while *i < bytes.len() && shift < 64 {
        let b = bytes[*i];
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
    None
}

/// Which field the statistics are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[default]
    Cluster,
    User,
    Verb,
    Resource,
    Namespace,
}

impl By {
    /// The name, which is also the filter flag (and URL parameter) that selects one group.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Cluster => "cluster",
            By::User => "user",
            By::Verb => "verb",
            By::Resource => "resource",
            By::Namespace => "namespace",
        }
    }

    pub fn parse(s: &str) -> Option<By> {
        By::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub const ALL: [By; 5] = [By::Cluster, By::User, By::Verb, By::Resource, By::Namespace];

    /// Its number in the hourly tier (`call_rollups_by.by_field`).
    fn index(self) -> i64 {
        By::ALL.iter().position(|b| *b == self).unwrap_or(0) as i64
    }

    /// Its value for the cell of a minute rollup (`pods` or `pods/log` for resources).
    fn value_of(self, k: &CellKey) -> String {
        match self {
            By::Cluster => k.cluster.clone(),
            By::User => k.user.clone(),
            By::Verb => k.verb.clone(),
            By::Namespace => k.namespace.clone(),
            By::Resource if k.subresource.is_empty() => k.resource.clone(),
            By::Resource => format!("{}/{}", k.resource, k.subresource),
        }
    }
}

/// One question: which calls (`filter`), grouped how, over which intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsQuery {
    pub filter: Filter,
    #[serde(default)]
    pub by: By,
    /// The length of each point of the series, a whole number of minutes (0: no series).
    #[serde(default)]
    pub interval_us: i64,
    /// How many of the slowest calls to list.
    #[serde(default)]
    pub slowest: usize,
}

/// Points a series may have at most.
pub const MAX_POINTS: i64 = 2_000;
/// Slowest calls an answer lists at most.
pub const MAX_SLOWEST: usize = 100;

impl StatsQuery {
    /// Refuses questions that cannot be answered well: a series without a start, too many
    /// points, too many slowest calls.
    pub fn check(&self, now_us: i64) -> Result<(), String> {
        self.filter.check().map_err(|e| e.to_string())?;
        if self.interval_us < 0 {
            return Err("the interval must be positive (1m, 15m, 1h, 1d)".into());
        }
        if self.interval_us > 0 {
            let Some(since) = self.filter.since_us else {
                return Err("a series (an interval) needs the start of its range: add since (15m, 24h, 7d or a time)".into());
            };
            let interval = ((self.interval_us + MINUTE_US - 1) / MINUTE_US).max(1) * MINUTE_US;
            let until = self.filter.until_us.unwrap_or(now_us);
            let points = (until - since) / interval;
            if points > MAX_POINTS {
                return Err(format!(
                    "{points} points of {} each: at most {MAX_POINTS}; use a longer interval or a shorter range",
                    super::format::format_duration_us(interval)
                ));
            }
        }
        if self.slowest > MAX_SLOWEST {
            return Err(format!("at most {MAX_SLOWEST} slowest calls"));
        }
        Ok(())
    }
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub by: By,
    pub since_us: Option<i64>,
    pub until_us: i64,
    pub interval_us: i64,
    /// Every matching call together.
    pub total: GroupStats,
    /// Per group, most calls first.
    pub groups: Vec<GroupStats>,
    /// Per interval and group, oldest first.
    pub series: Vec<Point>,
    /// Per interval, all groups together (key `all`), oldest first.
    #[serde(default)]
    pub total_series: Vec<Point>,
    /// The slowest calls (gateway-measured), slowest first.
    pub slowest: Vec<CallRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GroupStats {
    pub key: String,
    pub calls: u64,
    /// Calls per minute over the range (or since the first call, without a start).
    pub per_minute: f64,
    /// Calls per status class: `2xx`, `4xx`, `err` (no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Duration at the gateway (gateway + cluster), every call.
    pub p50_us: Option<i64>,
    pub p95_us: Option<i64>,
    pub p99_us: Option<i64>,
    pub mean_us: Option<i64>,
    pub max_us: Option<i64>,
    /// The clients' own end-to-end measurements, for the calls they shipped.
    pub client_calls: u64,
    pub client_p50_us: Option<i64>,
    pub client_p95_us: Option<i64>,
    pub client_p99_us: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub start_us: i64,
    pub key: String,
    pub calls: u64,
    /// 4xx, 5xx and unanswered calls.
    pub errors: u64,
    /// Calls per status class (`2xx`, `4xx`, `err` for no answer…).
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
    pub p50_us: Option<i64>,
    pub p95_us: Option<i64>,
    pub p99_us: Option<i64>,
}

/// What a rollup row or a single call contributes.
struct Sample<'a> {
    time_us: i64,
    key: &'a str,
    status: u16,
    calls: u64,
    sum_us: i64,
    max_us: i64,
    max_id: &'a str,
    /// A rollup's encoded histogram (None: one call of `duration_us`).
    hist: Option<&'a [u8]>,
    duration_us: i64,
    /// Calls per status class (a tier row: `status` is not one status).
    classes: Option<[u64; 6]>,
}

#[derive(Default)]
struct Acc {
    calls: u64,
    sum_us: i64,
    max_us: i64,
    /// Calls per status class, indexed as `CLASSES`.
    statuses: [u64; 6],
    hist: Histogram,
    client: Histogram,
    first_us: Option<i64>,
}

impl Acc {
    /// Adds a sample whose histogram is `buckets` (decoded once for every Acc it goes to).
    fn add(&mut self, s: &Sample, buckets: &[(u16, u64)]) {
        self.calls += s.calls;
        self.sum_us += s.sum_us;
        self.max_us = self.max_us.max(s.max_us);
        match s.classes {
            Some(classes) => {
                for (n, c) in self.statuses.iter_mut().zip(classes) {
                    *n += c;
                }
            }
            None => self.statuses[class_index(s.status)] += s.calls,
        }
        self.hist.add_buckets(buckets);
        self.first_us = Some(self.first_us.map_or(s.time_us, |t| t.min(s.time_us)));
    }

    fn finish(&self, key: String, since: Option<i64>, until: i64) -> GroupStats {
        let start = since.or(self.first_us).unwrap_or(until);
        let minutes = ((until - start) as f64 / MINUTE_US as f64).max(1.0);
        GroupStats {
            key,
            calls: self.calls,
            per_minute: self.calls as f64 / minutes,
            statuses: self.status_map(),
            p50_us: self.hist.quantile(0.50).map(|v| v.min(self.max_us)),
            p95_us: self.hist.quantile(0.95).map(|v| v.min(self.max_us)),
            p99_us: self.hist.quantile(0.99).map(|v| v.min(self.max_us)),
            mean_us: (self.calls > 0).then(|| self.sum_us / self.calls as i64),
            max_us: (self.calls > 0).then_some(self.max_us),
            client_calls: self.client.total(),
            client_p50_us: self.client.quantile(0.50),
            client_p95_us: self.client.quantile(0.95),
            client_p99_us: self.client.quantile(0.99),
        }
    }
}

/// The status classes, as `Acc::statuses` counts them (`err`: no answer).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "err"];

fn class_index(status: u16) -> usize {
    if (100..=599).contains(&status) {
        usize::from(status / 100 - 1)
    } else {
        5
    }
}

impl Acc {
    /// `{"2xx": 12, "4xx": 1}`: the classes that have calls.
    fn status_map(&self) -> BTreeMap<String, u64> {
        CLASSES
            .iter()
            .zip(self.statuses)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| (c.to_string(), n))
            .collect()
    }

    /// 4xx, 5xx and unanswered calls.
    fn errors(&self) -> u64 {
        self.statuses[3..].iter().sum()
    }
}

/// Gathers samples into groups, series points and the slowest calls.
struct Aggregate {
    by: By,
    interval_us: i64,
    total: Acc,
    groups: HashMap<String, Acc>,
    points: HashMap<i64, HashMap<String, Acc>>,
    total_points: HashMap<i64, Acc>,
    slowest: Vec<(i64, String)>,
    keep: usize,
    /// The current sample's histogram, decoded once.
    scratch: Vec<(u16, u64)>,
}

impl Aggregate {
    /// The sample's histogram as (bucket, count) pairs, in `scratch`.
    fn decode(&mut self, s: &Sample) -> Vec<(u16, u64)> {
        let mut buckets = std::mem::take(&mut self.scratch);
        match s.hist {
            Some(h) => decode_into(h, &mut buckets),
            None => {
                buckets.clear();
                buckets.push((Histogram::bucket(s.duration_us), 1));
            }
        }
        buckets
    }

    fn gateway(&mut self, s: Sample) {
        let buckets = self.decode(&s);
        self.total.add(&s, &buckets);
        // Looked up by &str first: a new String only for a new group.
        match self.groups.get_mut(s.key) {
            Some(acc) => acc.add(&s, &buckets),
            None => self
                .groups
                .entry(s.key.to_string())
                .or_default()
                .add(&s, &buckets),
        }
        if self.interval_us > 0 {
            let start = s.time_us.div_euclid(self.interval_us) * self.interval_us;
            let points = self.points.entry(start).or_default();
            match points.get_mut(s.key) {
                Some(acc) => acc.add(&s, &buckets),
                None => points
                    .entry(s.key.to_string())
                    .or_default()
                    .add(&s, &buckets),
            }
            self.total_points
                .entry(start)
                .or_default()
                .add(&s, &buckets);
        }
        self.scratch = buckets;
        if self.keep > 0 && !s.max_id.is_empty() {
            let floor = if self.slowest.len() < self.keep {
                i64::MIN
            } else {
                self.slowest.last().map_or(i64::MIN, |(us, _)| *us)
            };
            if s.max_us > floor {
                let at = self.slowest.partition_point(|(us, _)| *us >= s.max_us);
                self.slowest.insert(at, (s.max_us, s.max_id.to_string()));
                self.slowest.truncate(self.keep);
            }
        }
    }

    fn client(&mut self, s: Sample) {
        let buckets = self.decode(&s);
        self.total.client.add_buckets(&buckets);
        match self.groups.get_mut(s.key) {
            Some(acc) => acc.client.add_buckets(&buckets),
            None => self
                .groups
                .entry(s.key.to_string())
                .or_default()
                .client
                .add_buckets(&buckets),
        }
        self.scratch = buckets;
    }
}

/// The column a grouping reads (rollups and calls have the same names).
fn key_sql(by: By) -> &'static str {
    match by {
        By::Cluster => "c.cluster",
        By::User => "c.user",
        By::Verb => "c.verb",
        By::Namespace => "c.namespace",
        By::Resource => {
            "CASE WHEN c.subresource = '' THEN c.resource ELSE c.resource || '/' || c.subresource END"
        }
    }
}

/// Whether rollups can answer a filter (they keep no command text, command id or single
/// durations).
fn rollups_answer(f: &Filter) -> bool {
    f.commands.is_empty() && f.command_id.is_none() && f.min_duration_us.is_none()
}

/// The lowest UUIDv7 (as text) made at or after `us`: client calls are keyed by their UUIDv7
/// id, so a time range is an id range.
fn uuid_floor(us: i64) -> String {
    let ms = (us.max(0) / 1000) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes).to_string()
}

/// Reads calls of `table` (`api_calls` or `client_calls`) one by one into `agg`: those of
/// `f` within `window`, with `extra` conditions.
#[allow(clippy::too_many_arguments)]
fn raw_calls(
    tx: &mut Db,
    agg: &mut Aggregate,
    f: &Filter,
    table: &str,
    window: (Option<i64>, Option<i64>),
    extra: &str,
    extra_params: Vec<Value>,
    client: bool,
) -> Result<(), DbError> {
    let key = key_sql(agg.by);
    let mut filter = f.clone();
    filter.since_us = window.0;
    filter.until_us = window.1;
    let (clause, mut params) = filter.call_clause_for(tx.dialect());
    params.extend(extra_params);
    let join = if rollups_answer(f) {
        ""
    } else {
        "LEFT JOIN commands cmd ON cmd.id = c.command_id AND cmd.user = c.user"
    };
    let table = table.replace(" INDEXED BY ", "\0");
    let table = match table.split_once('\0') {
        Some((table, index)) => format!("{table}{}", tx.dialect().indexed_by(index)),
        None => table,
    };
    let sql = format!(
        "SELECT c.time_us, {key}, c.status, c.duration_us, c.id FROM {table} {join} \
         WHERE {clause} {extra} AND c.reason NOT IN (?, ?)"
    );
    params.push(Value::Text(STREAM_OPEN.into()));
    params.push(Value::Text(IN_PROGRESS.into()));
    let params: Vec<&dyn Param> = params.iter().map(|v| v as &dyn Param).collect();
    tx.query_each(&sql, &params, &mut |row| {
        let k: String = row.get(1)?;
        let status: i64 = row.get(2)?;
        let d: i64 = row.get(3)?;
        let id: String = row.get(4)?;
        let s = Sample {
            time_us: row.get(0)?,
            key: &k,
            status: status.clamp(0, 999) as u16,
            calls: 1,
            sum_us: d,
            max_us: d,
            max_id: &id,
            hist: None,
            duration_us: d,
            classes: None,
        };
        if client {
            agg.client(s);
        } else {
            agg.gateway(s);
        }
        Ok(())
    })
}

/// Whether the hourly tier can answer a filter: no field but the time (a tier row keeps one
/// grouping field, and counts statuses by class).
fn by_tier_answers(f: &Filter) -> bool {
    rollups_answer(f)
        && f.statuses.is_empty()
        && f.users.is_empty()
        && f.clusters.is_empty()
        && f.namespaces.is_empty()
        && f.resources.is_empty()
        && f.verbs.is_empty()
        && f.access_methods.is_empty()
}

/// Reads the hourly tier's rows of `agg.by` in `[from, to)` into `agg`.
fn read_by_rollups(
    tx: &mut Db,
    agg: &mut Aggregate,
    from: Option<i64>,
    to: i64,
) -> Result<(), DbError> {
    let mut sql = "SELECT c.time_us, c.group_key, c.calls, c.sum_us, c.max_us, c.max_id, c.hist, \
         c.source, c.s1xx, c.s2xx, c.s3xx, c.s4xx, c.s5xx, c.serr FROM call_rollups_by c \
         WHERE c.by_field = ? AND c.time_us < ?"
        .to_string();
    let mut params = vec![Value::Integer(agg.by.index()), Value::Integer(to)];
    if let Some(from) = from {
        sql.push_str(" AND c.time_us >= ?");
        params.push(Value::Integer(from));
    }
    let params: Vec<&dyn Param> = params.iter().map(|v| v as &dyn Param).collect();
    tx.query_each(&sql, &params, &mut |row| {
        let mut classes = [0u64; 6];
        for (i, n) in classes.iter_mut().enumerate() {
            *n = row.get::<i64>(8 + i)? as u64;
        }
        let s = Sample {
            time_us: row.get(0)?,
            key: row.get_ref(1)?.as_str()?,
            status: 0,
            calls: row.get::<i64>(2)? as u64,
            sum_us: row.get(3)?,
            max_us: row.get(4)?,
            max_id: row.get_ref(5)?.as_str()?,
            hist: Some(row.get_ref(6)?.as_blob()?),
            duration_us: 0,
            classes: Some(classes),
        };
        if row.get::<i64>(7)? == 1 {
            agg.client(s);
        } else {
            agg.gateway(s);
        }
        Ok(())
    })
}

/// Reads rollup rows (time, key, status, calls, sum, max, slowest id, histogram, source) into
/// `agg`, borrowed from each row: no allocation per row.
fn read_rollups(
    tx: &mut Db,
    agg: &mut Aggregate,
    sql: &str,
    params: &[Value],
) -> Result<(), DbError> {
    let params: Vec<&dyn Param> = params.iter().map(|v| v as &dyn Param).collect();
    tx.query_each(sql, &params, &mut |row| {
        let k = row.get_ref(1)?.as_str()?;
        let max_id = row.get_ref(6)?.as_str()?;
        let hist = row.get_ref(7)?.as_blob()?;
        let status: i64 = row.get(2)?;
        let s = Sample {
            time_us: row.get(0)?,
            key: k,
            status: status.clamp(0, 999) as u16,
            calls: row.get::<i64>(3)? as u64,
            sum_us: row.get(4)?,
            max_us: row.get(5)?,
            max_id,
            hist: Some(hist),
            duration_us: 0,
            classes: None,
        };
        if row.get::<i64>(8)? == 1 {
            agg.client(s);
        } else {
            agg.gateway(s);
        }
        Ok(())
    })
}

/// Answers `q` from the store behind `conn` (one read transaction: one snapshot).
pub fn stats(db: &mut Db, q: &StatsQuery, now_us: i64) -> Result<Stats, DbError> {
    db.transaction(false, |tx| stats_in(tx, q, now_us))
}

fn stats_in(tx: &mut Db, q: &StatsQuery, now_us: i64) -> Result<Stats, DbError> {
    let f = &q.filter;
    let until = f.until_us.unwrap_or(now_us);
    let interval = if q.interval_us > 0 {
        ((q.interval_us + MINUTE_US - 1) / MINUTE_US).max(1) * MINUTE_US
    } else {
        0
    };
    let mut agg = Aggregate {
        by: q.by,
        interval_us: interval,
        total: Acc::default(),
        groups: HashMap::new(),
        points: HashMap::new(),
        total_points: HashMap::new(),
        slowest: Vec::new(),
        keep: q.slowest.min(MAX_SLOWEST),
        scratch: Vec::new(),
    };
    let key = key_sql(agg.by);
    let through: i64 = tx
        .query_row(
            "SELECT through_seq FROM rollup_state WHERE id = 1",
            &[],
            |r| r.get(0),
        )?
        .unwrap_or(0);
    let id_range = |from: Option<i64>, to: Option<i64>| {
        let mut sql = String::new();
        let mut params = Vec::new();
        if let Some(from) = from {
            sql.push_str(" AND c.id >= ?");
            params.push(Value::Text(uuid_floor(from)));
        }
        if let Some(to) = to {
            // A call's id is made a moment before its time is taken: a millisecond of slack.
            sql.push_str(" AND c.id < ?");
            params.push(Value::Text(uuid_floor(to + 1_000)));
        }
        (sql, params)
    };
    if rollups_answer(f) {
        let since = f.since_us;
        let first_minute = since.map(|s| (s + MINUTE_US - 1).div_euclid(MINUTE_US) * MINUTE_US);
        let last_minute = until.div_euclid(MINUTE_US) * MINUTE_US;
        // Whole minutes from rollups; whole hours from the hourly tier where it can answer.
        let minutes = |tx: &mut Db, agg: &mut Aggregate, from: Option<i64>, to: i64| {
            let mut rf = f.clone();
            rf.since_us = from;
            rf.until_us = Some(to);
            let (clause, params) = rf.call_clause_for(tx.dialect());
            let sql = format!(
                "SELECT c.time_us, {key}, c.status, c.calls, c.sum_us, c.max_us, c.max_id, c.hist, \
                 c.source FROM call_rollups c WHERE {clause}"
            );
            read_rollups(tx, agg, &sql, &params)
        };
        let first_hour = first_minute.map(|m| (m + HOUR_US - 1).div_euclid(HOUR_US) * HOUR_US);
        let last_hour = last_minute.div_euclid(HOUR_US) * HOUR_US;
        // The tier answers hours below its mark, for questions it can answer.
        let tier_through = if by_tier_answers(f) && interval % HOUR_US == 0 {
            by_through(tx, "")?
        } else {
            0
        };
        let last_hour = last_hour.min(tier_through);
        let hours = tier_through > 0 && first_hour.is_none_or(|h| h < last_hour);
        if hours {
            if let (Some(m), Some(h)) = (first_minute, first_hour) {
                if m < h {
                    minutes(tx, &mut agg, Some(m), h)?;
                }
            }
            read_by_rollups(tx, &mut agg, first_hour, last_hour)?;
            if last_hour < last_minute {
                minutes(tx, &mut agg, Some(last_hour), last_minute)?;
            }
        } else {
            minutes(tx, &mut agg, first_minute, last_minute)?;
        }
        // The edges, and what is not rolled up yet, from the calls.
        let seq_le = (" AND c.seq <= ?", vec![Value::Integer(through)]);
        if let (Some(s), Some(m)) = (since, first_minute) {
            if s < m {
                raw_calls(
                    tx,
                    &mut agg,
                    f,
                    "api_calls c INDEXED BY api_calls_time",
                    (Some(s), Some(m.min(until))),
                    seq_le.0,
                    seq_le.1.clone(),
                    false,
                )?;
                let (ids, p) = id_range(Some(s), Some(m.min(until)));
                raw_calls(
                    tx,
                    &mut agg,
                    f,
                    "client_calls c",
                    (Some(s), Some(m.min(until))),
                    &ids,
                    p,
                    true,
                )?;
            }
        }
        if last_minute < until && first_minute.is_none_or(|m| m <= last_minute) {
            raw_calls(
                tx,
                &mut agg,
                f,
                "api_calls c INDEXED BY api_calls_time",
                (Some(last_minute), Some(until)),
                seq_le.0,
                seq_le.1.clone(),
                false,
            )?;
            let (ids, p) = id_range(Some(last_minute), Some(until));
            raw_calls(
                tx,
                &mut agg,
                f,
                "client_calls c",
                (Some(last_minute), Some(until)),
                &ids,
                p,
                true,
            )?;
        }
        // Not rolled up yet: a range of the sequence (SQLite would otherwise walk the time
        // index over the whole range and test each call's seq).
        raw_calls(
            tx,
            &mut agg,
            f,
            "api_calls c INDEXED BY api_calls_seq",
            (since, Some(until)),
            " AND c.seq > ?",
            vec![Value::Integer(through)],
            false,
        )?;
    } else {
        raw_calls(
            tx,
            &mut agg,
            f,
            "api_calls c",
            (f.since_us, Some(until)),
            "",
            Vec::new(),
            false,
        )?;
        let (ids, p) = id_range(f.since_us, Some(until));
        raw_calls(
            tx,
            &mut agg,
            f,
            "client_calls c",
            (f.since_us, Some(until)),
            &ids,
            p,
            true,
        )?;
    }
    let since = f.since_us;
    let mut groups: Vec<GroupStats> = agg
        .groups
        .iter()
        .map(|(k, a)| a.finish(k.clone(), since, until))
        .collect();
    groups.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));
    let mut series: Vec<Point> = agg
        .points
        .iter()
        .flat_map(|(start, groups)| groups.iter().map(|(k, a)| point(*start, k.clone(), a)))
        .collect();
    let mut total_series: Vec<Point> = agg
        .total_points
        .iter()
        .map(|(start, a)| point(*start, "all".into(), a))
        .collect();
    total_series.sort_by_key(|p| p.start_us);
    series.sort_by(|a, b| a.start_us.cmp(&b.start_us).then_with(|| a.key.cmp(&b.key)));
    let mut slowest = Vec::new();
    if !agg.slowest.is_empty() {
        let ids: Vec<Value> = agg
            .slowest
            .iter()
            .map(|(_, id)| Value::Text(id.clone()))
            .collect();
        let marks = vec!["?"; ids.len()].join(",");
        let sql = format!("{} WHERE c.id IN ({marks})", super::store::call_select());
        let params: Vec<&dyn Param> = ids.iter().map(|v| v as &dyn Param).collect();
        slowest = tx.query_vec(&sql, &params, super::store::call_row_from)?;
        slowest.sort_by_key(|r: &CallRow| std::cmp::Reverse(r.call.duration_us));
    }
    Ok(Stats {
        by: agg.by,
        since_us: since,
        until_us: until,
        interval_us: interval,
        total: agg.total.finish("all".into(), since, until),
        groups,
        series,
        total_series,
        slowest,
    })
}

fn point(start_us: i64, key: String, a: &Acc) -> Point {
    Point {
        start_us,
        key,
        calls: a.calls,
        errors: a.errors(),
        statuses: a.status_map(),
        p50_us: a.hist.quantile(0.50).map(|v| v.min(a.max_us)),
        p95_us: a.hist.quantile(0.95).map(|v| v.min(a.max_us)),
        p99_us: a.hist.quantile(0.99).map(|v| v.min(a.max_us)),
    }
}

/// Rolls up the store's own calls written after the last roll-up (at most `max` of them), in
/// one write transaction that also moves the mark. Returns how many calls it read.
///
/// The transaction reads one snapshot: every number of the sequence up to its `last` there is
/// committed (a writer holds the sequence until it commits), so what was read up to it is
/// everything. With several gateways, the first to move the mark wins; another rolling up at
/// the same moment fails (a PostgreSQL serialization failure) and tries again a minute later.
pub fn roll_up(db: &mut Db, max: usize) -> Result<usize, DbError> {
    db.snapshot_transaction(|tx| roll_up_in(tx, max))
}

fn roll_up_in(tx: &mut Db, max: usize) -> Result<usize, DbError> {
    let lock = match tx.dialect() {
        crate::db::Dialect::Sqlite => "SELECT through_seq FROM rollup_state WHERE id = 1",
        crate::db::Dialect::Postgres => {
            "SELECT through_seq FROM rollup_state WHERE id = 1 FOR UPDATE"
        }
    };
    let through: i64 = tx.query_row(lock, &[], |r| r.get(0))?.unwrap_or(0);
    let end: i64 = tx
        .query_row("SELECT last FROM sequence WHERE id = 1", &[], |r| r.get(0))?
        .unwrap_or(0);
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    let mut last = through;
    let mut read = 0usize;
    let sql = format!(
        "SELECT seq, {ROLLED_COLUMNS} FROM api_calls{} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        tx.dialect().indexed_by("api_calls_seq")
    );
    tx.query_each(&sql, args![through, end, max as i64], &mut |row| {
        read += 1;
        last = row.get(0)?;
        add_row(&mut cells, row, 1)
    })?;
    if read < max {
        // Everything up to the sequence's end was read. (Commands take numbers too.)
        last = last.max(end);
    }
    if last == through {
        return Ok(0);
    }
    write_cells(tx, 0, cells)?;
    tx.execute(
        "UPDATE rollup_state SET through_seq = ? WHERE id = 1",
        args![last],
    )?;
    Ok(read)
}

/// Rolls up every call the store holds (the gateway's upkeep runs this every minute).
pub fn roll_up_all(db: &mut Db) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let n = roll_up(db, 50_000)?;
        total += n;
        if n < 50_000 {
            break;
        }
    }
    let hours = advance_by_tier(db, super::model::now_us())?;
    if hours > 24 {
        tracing::info!(hours, "made the hourly rollups per grouping field");
    }
    Ok(total)
}

/// Rolls up clients' calls just stored by ingest (inside its transaction). Placeholders (an
/// open stream, a call in progress) are left out: their final records count when they come.
pub fn roll_up_client_calls<'a>(
    tx: &mut Db,
    calls: impl IntoIterator<Item = &'a super::ApiCall>,
) -> Result<(), DbError> {
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    for c in calls {
        if c.reason == STREAM_OPEN || c.reason == IN_PROGRESS {
            continue;
        }
        let key = CellKey {
            minute: c.time_us.div_euclid(MINUTE_US) * MINUTE_US,
            user: c.user.clone(),
            cluster: c.cluster.clone(),
            namespace: c.namespace.clone(),
            resource: c.resource.clone(),
            subresource: c.subresource.clone(),
            verb: c.verb.clone(),
            access_method: c.access_method.as_str().to_string(),
            status: i64::from(c.status),
        };
        cells
            .entry(key)
            .or_default()
            .add(c.duration_us, &c.id.to_string());
    }
    write_cells(tx, 1, cells)
}

/// Rolls up the clients' calls stored before rollups existed (once, when the store migrates).
pub fn adopt_client_calls(tx: &rusqlite::Connection) -> Result<(), DbError> {
    // The hourly tier comes in a later migration, and is built from these then.
    let mut db = Db::Sqlite(tx);
    let cells = stored_client_cells(&mut db)?;
    write_minute_cells(&mut db, 1, cells)
}

/// Rolls up every client call the store holds (a store that has none rolled up yet: a new
/// store's migration, or a copy into PostgreSQL whose rollups are made anew).
pub fn roll_up_stored_client_calls(db: &mut Db) -> Result<(), DbError> {
    let cells = stored_client_cells(db)?;
    write_cells(db, 1, cells)
}

fn stored_client_cells(db: &mut Db) -> Result<HashMap<CellKey, Cell>, DbError> {
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    db.query_each(
        &format!("SELECT {ROLLED_COLUMNS} FROM client_calls"),
        &[],
        &mut |row| add_row(&mut cells, row, 0),
    )?;
    Ok(cells)
}

/// The columns `add_row` reads, in its order.
const ROLLED_COLUMNS: &str = "time_us, \"user\", cluster, namespace, resource, subresource, verb, \
    access_method, status, duration_us, id, reason";

/// Adds the call in `row` (`ROLLED_COLUMNS` from column `at`) to its cell, unless it is a
/// placeholder (an open stream, a call in progress): its final record counts when it comes.
fn add_row(cells: &mut HashMap<CellKey, Cell>, row: &Row, at: usize) -> Result<(), DbError> {
    let reason = row.get_ref(at + 11)?.as_str()?;
    if reason == STREAM_OPEN || reason == IN_PROGRESS {
        return Ok(());
    }
    let key = CellKey {
        minute: row.get::<i64>(at)?.div_euclid(MINUTE_US) * MINUTE_US,
        user: row.get(at + 1)?,
        cluster: row.get(at + 2)?,
        namespace: row.get(at + 3)?,
        resource: row.get(at + 4)?,
        subresource: row.get(at + 5)?,
        verb: row.get(at + 6)?,
        access_method: row.get(at + 7)?,
        status: row.get(at + 8)?,
    };
    let id = row.get_ref(at + 10)?.as_str()?;
    cells.entry(key).or_default().add(row.get(at + 9)?, id);
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CellKey {
    minute: i64,
    user: String,
    cluster: String,
    namespace: String,
    resource: String,
    subresource: String,
    verb: String,
    access_method: String,
    status: i64,
}

#[derive(Default)]
struct Cell {
    calls: i64,
    sum_us: i64,
    max_us: i64,
    max_id: String,
    hist: Histogram,
}

impl Cell {
    /// Adds another cell's calls (a minute's, into an hour's).
    fn merge(&mut self, other: &Cell) {
        self.merge_parts(other.calls, other.sum_us, other.max_us, &other.max_id);
        self.hist.merge(&other.hist);
    }

    fn merge_parts(&mut self, calls: i64, sum_us: i64, max_us: i64, max_id: &str) {
        self.calls += calls;
        self.sum_us += sum_us;
        if self.max_id.is_empty() || max_us > self.max_us {
            self.max_us = max_us;
            self.max_id = max_id.to_string();
        }
    }

    fn add(&mut self, duration_us: i64, id: &str) {
        self.calls += 1;
        self.sum_us += duration_us;
        if self.max_id.is_empty() || duration_us > self.max_us {
            self.max_us = duration_us;
            self.max_id = id.to_string();
        }
        self.hist.add(duration_us, 1);
    }
}

/// A cell of the hourly tier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ByKey {
    hour: i64,
    source: i64,
    by: i64,
    key: String,
}

/// A tier cell: the sums, and the calls per status class.
#[derive(Default)]
struct ByCell {
    cell: Cell,
    classes: [i64; 6],
}

/// The hour below which the tier holds every rolled-up call (PostgreSQL: writers share the
/// row, `advance_by_tier` takes it for update, so that an hour is made from the minute
/// rollups or written by the writer, never both, never neither).
fn by_through(tx: &mut Db, lock: &str) -> Result<i64, DbError> {
    let sql = match tx.dialect() {
        crate::db::Dialect::Sqlite => {
            "SELECT by_through FROM rollup_state WHERE id = 1".to_string()
        }
        crate::db::Dialect::Postgres => {
            format!("SELECT by_through FROM rollup_state WHERE id = 1 {lock}")
        }
    };
    Ok(tx.query_row(&sql, &[], |r| r.get::<i64>(0))?.unwrap_or(0))
}

/// Writes the minute cells of `source`, and to the tier those of hours already in it (late
/// records).
fn write_cells(tx: &mut Db, source: i64, cells: HashMap<CellKey, Cell>) -> Result<(), DbError> {
    let through = by_through(tx, "FOR SHARE")?;
    let late = cells.keys().any(|k| k.minute < through);
    if late {
        let mut by_cells: HashMap<ByKey, ByCell> = HashMap::new();
        for (k, c) in cells.iter().filter(|(k, _)| k.minute < through) {
            add_to_tier(&mut by_cells, k, source, c.calls, |cell| cell.merge(c));
        }
        write_by_cells(tx, by_cells)?;
    }
    write_minute_cells(tx, source, cells)
}

fn write_minute_cells(
    tx: &mut Db,
    source: i64,
    cells: HashMap<CellKey, Cell>,
) -> Result<(), DbError> {
    let cells: Vec<(CellKey, Cell)> = cells.into_iter().collect();
    // Many cells per statement: one round trip to PostgreSQL for a batch's cells.
    for chunk in cells.chunks(CELLS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 15);
        for (k, c) in chunk {
            values.extend([
                Value::Integer(k.minute),
                Value::Integer(source),
                Value::Text(k.user.clone()),
                Value::Text(k.cluster.clone()),
                Value::Text(k.namespace.clone()),
                Value::Text(k.resource.clone()),
                Value::Text(k.subresource.clone()),
                Value::Text(k.verb.clone()),
                Value::Text(k.access_method.clone()),
                Value::Integer(k.status),
                Value::Integer(c.calls),
                Value::Integer(c.sum_us),
                Value::Integer(c.max_us),
                Value::Text(c.max_id.clone()),
                Value::Blob(c.hist.encode()),
            ]);
        }
        let sql = format!(
            "INSERT INTO call_rollups (time_us, source, \"user\", cluster, namespace, resource, subresource, \
             verb, access_method, status, calls, sum_us, max_us, max_id, hist) VALUES {}",
            vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",")
        );
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Rollup cells per insert statement.
const CELLS_PER_STATEMENT: usize = 256;

fn write_by_cells(tx: &mut Db, cells: HashMap<ByKey, ByCell>) -> Result<(), DbError> {
    let cells: Vec<(ByKey, ByCell)> = cells.into_iter().collect();
    for chunk in cells.chunks(CELLS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 15);
        for (k, ByCell { cell: c, classes }) in chunk {
            values.extend([
                Value::Integer(k.hour),
                Value::Integer(k.source),
                Value::Integer(k.by),
                Value::Text(k.key.clone()),
                Value::Integer(c.calls),
                Value::Integer(c.sum_us),
                Value::Integer(c.max_us),
                Value::Text(c.max_id.clone()),
                Value::Blob(c.hist.encode()),
            ]);
            values.extend(classes.iter().map(|n| Value::Integer(*n)));
        }
        let sql = format!(
            "INSERT INTO call_rollups_by (time_us, source, by_field, group_key, calls, sum_us, \
             max_us, max_id, hist, s1xx, s2xx, s3xx, s4xx, s5xx, serr) VALUES {}",
            vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",")
        );
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Moves the hourly tier up to the last hour that ended `BY_CLOSE` before `now`: each hour is
/// made from its minute rollups, a day per transaction (a store with a long history catches up
/// without holding the write lock for long). Returns the hours added.
pub fn advance_by_tier(db: &mut Db, now_us: i64) -> Result<i64, DbError> {
    let target = (now_us - BY_CLOSE).div_euclid(HOUR_US) * HOUR_US;
    let mut added = 0;
    loop {
        let step = db.transaction(true, |tx| -> Result<i64, DbError> {
            let mut through = by_through(tx, "FOR UPDATE")?;
            if through >= target {
                return Ok(0);
            }
            if through == 0 {
                // Not started: from the first minute rolled up (or, with none, from now on).
                let first: Option<i64> = tx
                    .query_row("SELECT MIN(time_us) FROM call_rollups", &[], |r| r.get(0))?
                    .flatten();
                through = first.map_or(target, |t| t.div_euclid(HOUR_US) * HOUR_US);
            }
            let end = (through.div_euclid(DAY_US) * DAY_US + DAY_US).min(target);
            if end > through {
                let cells = by_cells_of_minutes(tx, through, end)?;
                write_by_cells(tx, cells)?;
            }
            let end = end.max(through);
            tx.execute(
                "UPDATE rollup_state SET by_through = ? WHERE id = 1",
                args![end],
            )?;
            Ok(((end - through) / HOUR_US).max(1))
        })?;
        if step == 0 {
            return Ok(added);
        }
        added += step;
    }
}

/// Adds a minute cell's `calls` (their sums added by `add`) to its hour's cell of every field.
fn add_to_tier(
    by_cells: &mut HashMap<ByKey, ByCell>,
    k: &CellKey,
    source: i64,
    calls: i64,
    mut add: impl FnMut(&mut Cell),
) {
    let class = class_index(k.status.clamp(0, 999) as u16);
    for by in By::ALL {
        let cell = by_cells
            .entry(ByKey {
                hour: k.minute.div_euclid(HOUR_US) * HOUR_US,
                source,
                by: by.index(),
                key: by.value_of(k),
            })
            .or_default();
        add(&mut cell.cell);
        cell.classes[class] += calls;
    }
}

/// The tier's cells of the minute rollups in `[from, to)`.
fn by_cells_of_minutes(tx: &mut Db, from: i64, to: i64) -> Result<HashMap<ByKey, ByCell>, DbError> {
    let mut by_cells: HashMap<ByKey, ByCell> = HashMap::new();
    let mut buckets = Vec::new();
    tx.query_each(
        "SELECT time_us, source, \"user\", cluster, namespace, resource, subresource, verb, \
         status, calls, sum_us, max_us, max_id, hist FROM call_rollups \
         WHERE time_us >= ? AND time_us < ?",
        args![from, to],
        &mut |row| {
            let k = CellKey {
                minute: row.get(0)?,
                user: row.get(2)?,
                cluster: row.get(3)?,
                namespace: row.get(4)?,
                resource: row.get(5)?,
                subresource: row.get(6)?,
                verb: row.get(7)?,
                access_method: String::new(),
                status: row.get(8)?,
            };
            let source: i64 = row.get(1)?;
            let (calls, sum_us, max_us): (i64, i64, i64) =
                (row.get(9)?, row.get(10)?, row.get(11)?);
            let max_id = row.get_ref(12)?.as_str()?;
            decode_into(row.get_ref(13)?.as_blob()?, &mut buckets);
            add_to_tier(&mut by_cells, &k, source, calls, |cell| {
                cell.merge_parts(calls, sum_us, max_us, max_id);
                cell.hist.add_buckets(&buckets);
            });
            Ok(())
        },
    )?;
    Ok(by_cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket_and_survive_encoding() {
        let mut h = Histogram::default();
        for us in 1..=10_000i64 {
            h.add(us * 10, 1);
        }
        let back = Histogram::decode(&h.encode());
        assert_eq!(back, h);
        for (q, exact) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
            let got = back.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.045, "{q}: {got} vs {exact}");
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    /// Rollups (whole minutes), the edges and the tail not rolled up yet add up to exactly what
    /// reading every call gives (a min-duration filter of 0 forces that path).
    #[test]
    fn rollups_edges_and_tail_count_every_call_once() {
        use crate::audit::{ApiCall, AuditStore};
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        let now = super::super::model::now_us();
        let write = |n: usize, salt: u64| {
            let (sink, writer) = store.start_writer(4096).unwrap();
            for i in 0..n as u64 {
                let x = (i + 1) * 2_654_435_761 + salt;
                sink.record_call(ApiCall {
                    id: Uuid::now_v7(),
                    time_us: now - (x % 7_200_000_000) as i64,
                    user: ["alice", "bob"][(x % 2) as usize].into(),
                    cluster: ["prod", "dev", "lab"][(x % 3) as usize].into(),
                    namespace: "default".into(),
                    resource: "pods".into(),
                    subresource: if x % 5 == 0 {
                        "log".into()
                    } else {
                        String::new()
                    },
                    verb: ["get", "list", "delete"][(x % 3) as usize].into(),
                    status: [200, 200, 404, 500][(x % 4) as usize],
                    duration_us: (x % 90_000) as i64 + 100,
                    reason: if x % 17 == 0 {
                        STREAM_OPEN.into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                });
            }
            assert!(sink.flush(std::time::Duration::from_secs(10)));
            drop(sink);
            writer.close();
        };
        write(3000, 0);
        store.roll_up().unwrap();
        // The calls are of the last two hours: close them all into the tier, as three hours
        // from now would.
        store
            .with_db(false, |db| advance_by_tier(db, now + 3 * HOUR_US))
            .unwrap();
        write(500, 7);
        // The answer from rollups equals reading every call (a min-duration of 0 forces that).
        let check = |q: &StatsQuery| -> u64 {
            let fast = store.stats(q).unwrap();
            let mut raw_q = q.clone();
            raw_q.filter.min_duration_us = Some(0);
            let raw = store.stats(&raw_q).unwrap();
            let what = format!("{:?} {:?} {}", q.filter, q.by, q.interval_us);
            assert!(fast.total.calls > 0, "{what}");
            assert_eq!(fast.total.calls, raw.total.calls, "{what}");
            assert_eq!(fast.total.statuses, raw.total.statuses, "{what}");
            assert_eq!(fast.total.p99_us, raw.total.p99_us, "{what}");
            assert_eq!(fast.total.client_calls, raw.total.client_calls, "{what}");
            assert_eq!(fast.groups.len(), raw.groups.len(), "{what}");
            for (a, b) in fast.groups.iter().zip(&raw.groups) {
                assert_eq!(
                    (a.key.as_str(), a.calls, a.p50_us, a.max_us),
                    (b.key.as_str(), b.calls, b.p50_us, b.max_us),
                    "{what}"
                );
            }
            assert_eq!(fast.series, raw.series, "{what}");
            assert_eq!(fast.total_series, raw.total_series, "{what}");
            assert_eq!(
                fast.slowest.first().map(|r| r.call.id),
                raw.slowest.first().map(|r| r.call.id),
                "{what}"
            );
            fast.total.calls
        };
        let since_3h = Some(now - 3 * HOUR_US - 12_345);
        for since in [
            None,
            Some(now - 3_000_000_000 - 12_345),
            Some(now - 61_000_000),
        ] {
            for by in [By::Cluster, By::Resource] {
                check(&StatsQuery {
                    filter: Filter {
                        since_us: since,
                        ..Default::default()
                    },
                    by,
                    interval_us: 10 * MINUTE_US,
                    slowest: 5,
                });
            }
        }
        // Whole hours from the hourly tier: the same answers, per field, over hours, with no
        // start; a status filter reads the minute rollups instead, also the same.
        let tiered = |by, since, statuses: Vec<super::super::filter::StatusMatch>| StatsQuery {
            filter: Filter {
                since_us: since,
                statuses,
                ..Default::default()
            },
            by,
            interval_us: HOUR_US,
            slowest: 5,
        };
        use super::super::filter::StatusMatch;
        for by in By::ALL {
            check(&tiered(by, since_3h, vec![]));
        }
        check(&tiered(By::Verb, since_3h, vec![StatusMatch::Code(404)]));
        check(&tiered(By::User, None, vec![]));
        let q = tiered(By::Resource, since_3h, vec![]);
        let with_tier = check(&q);
        // It is what answered: without it the same question counts fewer calls.
        let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
        let rows: i64 = db
            .query_row("SELECT COUNT(*) FROM call_rollups_by", [], |r| r.get(0))
            .unwrap();
        assert!(rows > 0);
        // A later roll-up of calls in hours the tier holds already writes them to it too.
        store.roll_up().unwrap();
        assert_eq!(check(&q), with_tier);
        // Open streams are not counted (their final records are).
        let all = store
            .stats(&StatsQuery {
                filter: Filter::default(),
                by: By::Cluster,
                interval_us: 0,
                slowest: 0,
            })
            .unwrap();
        assert!(
            all.total.calls < 3500 && all.total.calls > 3000,
            "{}",
            all.total.calls
        );
        db.execute("DELETE FROM call_rollups_by", []).unwrap();
        assert!(store.stats(&q).unwrap().total.calls < with_tier);
    }

    /// A store migrated with clients' calls already in it counts them (not their placeholders).
    #[test]
    fn stored_client_calls_are_adopted_without_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::audit::AuditStore::open(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let now = super::super::model::now_us();
        for (i, reason) in ["", "", STREAM_OPEN, "", IN_PROGRESS].iter().enumerate() {
            conn.execute(
                "INSERT INTO client_calls (id, time_us, user, cluster, verb, status, duration_us, reason) \
                 VALUES (?, ?, 'alice', 'prod', 'get', 200, ?, ?)",
                rusqlite::params![Uuid::now_v7().to_string(), now - 1_000_000 * i as i64, 1000 * (i as i64 + 1), reason],
            )
            .unwrap();
        }
        adopt_client_calls(&conn).unwrap();
        let (rows, calls): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), SUM(calls) FROM call_rollups WHERE source = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(rows >= 1);
        assert_eq!(calls, 3);
    }

    #[test]
    fn uuid_floor_orders_like_uuid_v7_ids() {
        let id = Uuid::now_v7();
        let now = super::super::model::now_us();
        assert!(uuid_floor(now - 5_000) < id.to_string());
        assert!(uuid_floor(now + 5_000) > id.to_string());
    }
}
