//! System › Audit Logs › KubeCTL: the gateway's audit trail by commands or by API calls.
//!
//! The page's URL query is the filter, named as `ztk audit list`'s flags
//! (`/audit/kubectl?view=calls&namespace=prod&verb=delete&since=24h`) and read by the same
//! `Filter::from_flags`, with the same access rule as the query API
//! (`Gateway::restrict_audit_reads`). Pages are keyset pages of the store (`after`), never the
//! whole store. Live rows come from `/console/live`, the same follow-by-sequence as
//! `ztk audit tail --remote` (`gateway::api::next_records`); Export streams the whole filtered
//! set as CSV through the same `Emitter` as `ztk audit export --csv`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use maud::{html, Markup};

use super::auth::Viewer;
use super::layout::{self, duration, printable, time_cell, Nav};
use crate::audit::filter::FLAG_KEYS;
use crate::audit::format::{Emitter, Format};
use crate::audit::stats::By;
use crate::audit::store::RecentValues;
use crate::audit::{CallRow, CommandRow, Cursor, Filter, Record};
use crate::body::{self, Body, BodyError};
use crate::gateway::Gateway;
use crate::protocol::View;

/// Rows per page.
const PAGE: usize = 100;
/// Rows one live answer carries at most.
const LIVE_LIMIT: usize = 200;
/// How long a live request waits for new records.
const LIVE_WAIT: Duration = Duration::from_secs(20);
/// Suggested filter values are read from this many recent calls, at most once per `SUGGEST_TTL`.
const SUGGEST_RECENT: usize = 20_000;
const SUGGEST_TTL: Duration = Duration::from_secs(30);

/// The suggested filter values, cached: one bounded query every 30 s at most, not one per page.
/// Administrators see values from everyone's recent calls; other users from their own only
/// (cached per user, for at most `SUGGEST_USERS` users at once).
#[derive(Default)]
pub struct Suggestions {
    /// Keyed by user (None: everyone's, for administrators): when read, and the values.
    cached: Mutex<HashMap<Option<String>, Cached>>,
}

type Cached = (Instant, Arc<RecentValues>);

const SUGGEST_USERS: usize = 1024;
/// Values a field suggests at most (a datalist of more helps no one).
const SUGGEST_SHOWN: usize = 500;

impl Suggestions {
    pub(super) fn get(&self, gateway: &Gateway, viewer: &Viewer) -> Arc<RecentValues> {
        let key = (!viewer.admin).then(|| viewer.session.user.clone());
        if let Some((at, values)) = self.lock().get(&key) {
            if at.elapsed() < SUGGEST_TTL {
                return values.clone();
            }
        }
        // Read without holding the cache: other viewers' pages do not wait for this query.
        let mut values = gateway
            .audit_store
            .recent_values(SUGGEST_RECENT, key.as_deref())
            .unwrap_or_else(|err| {
                tracing::warn!("could not read the console's suggested values: {err}");
                RecentValues::default()
            });
        values.clusters.extend(gateway.clusters.keys().cloned());
        values.clusters.sort();
        values.clusters.dedup();
        for list in values.lists_mut() {
            list.truncate(SUGGEST_SHOWN);
        }
        let values = Arc::new(values);
        let mut cached = self.lock();
        if cached.len() >= SUGGEST_USERS {
            cached.retain(|_, (at, _)| at.elapsed() < SUGGEST_TTL);
            if cached.len() >= SUGGEST_USERS {
                cached.clear();
            }
        }
        cached.insert(key, (Instant::now(), values.clone()));
        values
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, Cached>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a page's URL asks for: the view, where the page starts, and the filter (its raw pairs
/// too, to build links that keep it).
pub(super) struct Query {
    view: View,
    after: Option<Cursor>,
    /// A call whose details are shown open (`open=ID`: where the insights page's slowest
    /// calls link to).
    open: Option<uuid::Uuid>,
    pairs: Vec<(String, String)>,
    pub(super) filter: Filter,
    /// For the insights page: the grouping and the series interval (as given, may be empty).
    pub(super) insights: Option<(By, String)>,
}

impl Query {
    /// Parses the URL query. Unknown keys and bad values are errors (a clear message, 400).
    pub(super) fn parse(
        raw: &str,
        viewer: &Viewer,
        gateway: &Gateway,
        insights: bool,
    ) -> (Query, Result<(), Refused>) {
        let all = super::pairs(raw);
        let mut q = Query {
            view: View::Commands,
            after: None,
            open: None,
            pairs: Vec::new(),
            filter: Filter::default(),
            insights: insights.then(|| (By::Cluster, String::new())),
        };
        let mut problem = None;
        for (k, v) in all {
            match k.as_str() {
                "by" if insights => match By::parse(&v) {
                    Some(by) => q.insights = Some((by, q.insights.take().unwrap_or_default().1)),
                    None => {
                        problem.get_or_insert(Refused::bad(format!(
                            "unknown grouping by={v:?}: use cluster, user, verb, resource or namespace"
                        )));
                    }
                },
                "interval" if insights => {
                    if let Some((_, interval)) = q.insights.as_mut() {
                        *interval = v.trim().to_string();
                    }
                }
                "view" => match v.as_str() {
                    "calls" => q.view = View::Calls,
                    "commands" | "" => q.view = View::Commands,
                    other => {
                        problem.get_or_insert(Refused::bad(format!(
                            "unknown view {other:?}: use view=commands or view=calls"
                        )));
                    }
                },
                "after" => match parse_cursor(&v) {
                    Some(c) => q.after = Some(c),
                    None => {
                        problem.get_or_insert(Refused::bad(format!(
                            "invalid page position after={v:?}; start from the first page"
                        )));
                    }
                },
                "open" => match uuid::Uuid::parse_str(&v) {
                    Ok(id) => q.open = Some(id),
                    Err(_) => {
                        problem.get_or_insert(Refused::bad(format!(
                            "invalid record id open={v:?}: use a call's full id"
                        )));
                    }
                },
                "after_seq" => {}
                key if FLAG_KEYS.contains(&key) => q.pairs.push((k, v)),
                other => {
                    problem.get_or_insert(Refused::bad(format!(
                        "unknown filter {other:?}: use {}",
                        FLAG_KEYS.join(", ")
                    )));
                }
            }
        }
        if problem.is_none() {
            match Filter::from_flags(q.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                Ok(f) => q.filter = f,
                Err(e) => problem = Some(Refused::bad(e.to_string())),
            }
        }
        if problem.is_none() {
            if insights && !q.pairs.iter().any(|(k, v)| k == "since" && !v.is_empty()) {
                // The insights page looks at the last day unless told otherwise.
                q.pairs.push(("since".into(), "24h".into()));
                q.filter.since_us = Some(crate::audit::model::now_us() - 24 * 3_600_000_000);
            }
            if let Err(message) = gateway.restrict_audit_reads(&viewer.session, &mut q.filter) {
                problem = Some(Refused {
                    status: StatusCode::FORBIDDEN,
                    message,
                });
            }
        }
        (q, problem.map_or(Ok(()), Err))
    }

    /// This page's URL with `changes` applied (a key set to `Some` replaces its values, `None`
    /// removes them); the page position is dropped unless given.
    pub(super) fn link(&self, view: View, changes: &[(&str, Option<&str>)]) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some((by, interval)) = &self.insights {
            pairs.push(("by", by.as_str()));
            if !interval.is_empty() {
                pairs.push(("interval", interval));
            }
        } else {
            pairs.push((
                "view",
                match view {
                    View::Calls => "calls",
                    View::Commands => "commands",
                },
            ));
        }
        for (k, v) in &self.pairs {
            if !changes.iter().any(|(c, _)| c == k) {
                pairs.push((k, v));
            }
        }
        for (k, v) in changes {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        }
        format!("{}?{}", self.path(), super::query_string(pairs))
    }

    fn path(&self) -> &'static str {
        if self.insights.is_some() {
            "/audit/insights"
        } else {
            "/audit/kubectl"
        }
    }

    /// The calls view of this page's filter, with `changes`.
    pub(super) fn calls_link(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![("view", "calls")];
        for (k, v) in &self.pairs {
            if !v.is_empty() && !changes.iter().any(|(c, _)| c == k) {
                pairs.push((k, v));
            }
        }
        for (k, v) in changes {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        }
        format!("/audit/kubectl?{}", super::query_string(pairs))
    }

    /// The raw value(s) of a filter key, for the form.
    pub(super) fn raw(&self, key: &str) -> String {
        self.pairs
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(super) fn filter_query(&self) -> String {
        super::query_string(
            self.pairs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    fn view_name(&self) -> &'static str {
        match self.view {
            View::Calls => "calls",
            View::Commands => "commands",
        }
    }
}

/// Why a page cannot show what was asked: shown on the page with its status.
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl Refused {
    /// The answer of the console's data endpoints: a Kubernetes `Status`.
    fn response(&self) -> Response<Body> {
        let reason = if self.status == StatusCode::FORBIDDEN {
            "Forbidden"
        } else {
            "BadRequest"
        };
        body::status_response(self.status, reason, &self.message)
    }

    fn bad(message: String) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

fn parse_cursor(s: &str) -> Option<Cursor> {
    let (time, id) = s.split_once('_')?;
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some(Cursor {
        time_us: time.parse().ok()?,
        id: id.to_string(),
    })
}

fn cursor_value(c: &Cursor) -> String {
    format!("{}_{}", c.time_us, c.id)
}

/// One page of rows, and what the page needs besides.
enum Rows {
    Calls(Vec<CallRow>),
    Commands(Vec<CommandRow>),
}

pub async fn page(gateway: &Arc<Gateway>, viewer: &Viewer, raw: &str) -> Response<Body> {
    let (q, checked) = Query::parse(raw, viewer, gateway, false);
    let suggestions = {
        let gw = gateway.clone();
        let viewer = viewer.clone();
        tokio::task::spawn_blocking(move || gw.console.suggestions.get(&gw, &viewer))
            .await
            .unwrap_or_default()
    };
    if let Err(refused) = checked {
        let content = frame(&q, viewer, &suggestions, Some(&refused.message), None, None);
        return super::html(
            refused.status,
            layout::page(
                "Audit Logs › KubeCTL",
                Some(viewer),
                Nav::AuditKubectl,
                content,
            ),
        );
    }
    let store = gateway.audit_store.clone();
    let (view, filter, after, command_id) = (
        q.view,
        q.filter.clone(),
        q.after.clone(),
        q.filter.command_id,
    );
    let read = tokio::task::spawn_blocking(move || {
        // The live rows start from here: read before the page, so nothing falls between.
        let seq = store.last_seq()?;
        let command = match command_id {
            Some(id) => store.command(id)?,
            None => None,
        };
        let (rows, next) = match view {
            View::Calls => {
                let page = store.query_calls(&filter, after.as_ref(), PAGE)?;
                (Rows::Calls(page.items), page.next)
            }
            View::Commands => {
                let page = store.query_commands(&filter, after.as_ref(), PAGE)?;
                (Rows::Commands(page.items), page.next)
            }
        };
        Ok::<_, crate::audit::store::StoreError>((seq, command, rows, next))
    })
    .await;
    let (seq, command, rows, next) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(err)) => return failed(viewer, err),
        Err(err) => return failed(viewer, err),
    };
    // A command's own header only for who may read it (its calls are filtered the same way).
    let command = command.filter(|c| viewer.admin || c.user == viewer.session.user);
    let listing = listing(&q, &rows, next.as_ref(), seq);
    let content = frame(
        &q,
        viewer,
        &suggestions,
        None,
        Some(listing),
        command.as_ref(),
    );
    super::html(
        StatusCode::OK,
        layout::page(
            "Audit Logs › KubeCTL",
            Some(viewer),
            Nav::AuditKubectl,
            content,
        ),
    )
}

fn failed(viewer: &Viewer, err: impl std::fmt::Display) -> Response<Body> {
    tracing::error!("console audit page failed: {err}");
    super::html(
        StatusCode::INTERNAL_SERVER_ERROR,
        layout::page(
            "Audit Logs › KubeCTL",
            Some(viewer),
            Nav::AuditKubectl,
            html! {
                h1 { "Audit Logs › KubeCTL" }
                p.error role="alert" { "The gateway could not read its audit store; see its log." }
            },
        ),
    )
}

/// The page around the listing: title, view switch, filters, active filter chips.
pub(super) fn frame(
    q: &Query,
    viewer: &Viewer,
    suggest: &RecentValues,
    error: Option<&str>,
    listing: Option<Markup>,
    command: Option<&crate::audit::Command>,
) -> Markup {
    let since = q.raw("since");
    let until = q.raw("until");
    let presets = ["15m", "1h", "24h", "7d"];
    let methods: Vec<String> = q
        .raw("access-method")
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .collect();
    let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
    let view = q.view;
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            ol { li { "System" } li { "Audit Logs" }
                @if q.insights.is_some() { li { a href=(q.calls_link(&[])) { "KubeCTL" } } li aria-current="page" { "Latency and activity" } }
                @else { li aria-current="page" { "KubeCTL" } } }
        }
        div.title-row {
            @if q.insights.is_some() {
                h1 { "Latency and activity" }
                a href=(q.calls_link(&[])) { "These calls in the audit log" }
            } @else {
                h1 { "KubeCTL activity" }
                div.switch role="group" aria-label="View" {
                    a href=(q.link(View::Commands, &[])) aria-current=[(q.view == View::Commands).then_some("page")] { "Commands" }
                    a href=(q.link(View::Calls, &[])) aria-current=[(q.view == View::Calls).then_some("page")] { "API calls" }
                }
                a href=(format!("/audit/insights?{}", q.filter_query())) { "Latency and activity" }
            }
        }
        @if let Some(error) = error {
            p.error role="alert" #filter-error { (error) }
        }
        nav.presets aria-label="Time range" {
            @for p in presets {
                a href=(q.link(view, &[("since", Some(p)), ("until", None)]))
                    aria-current=[(since == p && until.is_empty()).then_some("true")] { "Last " (p) }
            }
            // The insights page always looks at a range (the last day unless told).
            @if q.insights.is_none() {
                a href=(q.link(view, &[("since", None), ("until", None)]))
                    aria-current=[(since.is_empty() && until.is_empty()).then_some("true")] { "Any time" }
            }
        }
        form.filters method="get" action=(q.path()) aria-label="Filters" {
            @if q.insights.is_none() {
                input type="hidden" name="view" value=(q.view_name());
            }
            @if let Some(id) = q.filter.command_id {
                input type="hidden" name="id" value=(id.to_string());
            }
            div.fields {
                @if let Some((by, interval)) = &q.insights {
                    div.field {
                        label for="f-by" { "Group by" }
                        select #f-by name="by" {
                            @for b in [By::Cluster, By::User, By::Verb, By::Resource, By::Namespace] {
                                option value=(b.as_str()) selected[*by == b] { (b.as_str()) }
                            }
                        }
                    }
                    div.field {
                        label for="f-interval" { "Interval" }
                        select #f-interval name="interval" {
                            option value="" selected[interval.is_empty()] { "Automatic" }
                            @for i in ["1m", "5m", "15m", "1h", "6h", "1d"] {
                                option value=(i) selected[interval == i] { (i) }
                            }
                        }
                    }
                }
                @if viewer.admin {
                    (field("user", "User", &q.raw("user"), "alice,bob", Some(("users", &suggest.users))))
                }
                (field("cluster", "Cluster", &q.raw("cluster"), "prod", Some(("clusters", &suggest.clusters))))
                (field("namespace", "Namespace", &q.raw("namespace"), "default,kube-system", Some(("namespaces", &suggest.namespaces))))
                (field("resource", "Resource", &q.raw("resource"), "pods, pods/log", Some(("resources", &suggest.resources))))
                (field("verb", "Verb", &q.raw("verb"), "delete,patch", Some(("verbs", &suggest.verbs))))
                (field("status", "Status", &q.raw("status"), "404, 4xx", None))
                fieldset.field.checks {
                    legend { "Access method" }
                    @for (value, label) in [("cli", "CLI"), ("browser", "Browser"), ("api", "API")] {
                        label {
                            input type="checkbox" name="access-method" value=(value) checked[methods.contains(&value)];
                            " " (label)
                        }
                    }
                }
                (field("command", "Command contains", &q.raw("command"), "get pods", None))
                (field("min-duration", "Slower than", &q.raw("min-duration"), "250ms", None))
                (field("since", "Since (UTC)", &since, "1h, 7d or a time", Some(("since", &presets.iter().map(|p| p.to_string()).collect()))))
                (field("until", "Until (UTC)", &until, "empty: now; or a time", None))
            }
            div.actions {
                button.primary type="submit" { "Apply filters" }
                a href=(if q.insights.is_some() { "/audit/insights".to_string() } else { format!("/audit/kubectl?view={}", q.view_name()) }) { "Clear" }
            }
        }
        (chips(q))
        @if let Some(command) = command {
            (command_header(command, q))
        }
        @if let Some(listing) = listing {
            (listing)
        }
    }
}

fn field(
    name: &str,
    label: &str,
    value: &str,
    placeholder: &str,
    list: Option<(&str, &Vec<String>)>,
) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) type="text" name=(name) value=(value) placeholder=(placeholder)
                list=[list.map(|(l, _)| format!("s-{l}"))] autocomplete="off";
            @if let Some((l, values)) = list {
                datalist id=(format!("s-{l}")) {
                    @for v in values { option value=(v) {} }
                }
            }
        }
    }
}

/// The active filters, each removable.
fn chips(q: &Query) -> Markup {
    let active: Vec<&(String, String)> = q.pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    html! {
        @if !active.is_empty() {
            ul.chips aria-label="Active filters" {
                @for (k, v) in &active {
                    li {
                        span { (k) ": " (v) }
                        a href=(remove_link(q, k, v)) aria-label=(format!("Remove filter {k}: {v}")) { "×" }
                    }
                }
            }
        }
    }
}

fn remove_link(q: &Query, key: &str, value: &str) -> String {
    let view = q.view_name();
    let mut pairs: Vec<(&str, &str)> = match &q.insights {
        Some((by, _)) => vec![("by", by.as_str())],
        None => vec![("view", view)],
    };
    let mut removed = false;
    for (k, v) in &q.pairs {
        if !removed && k == key && v == value {
            removed = true;
            continue;
        }
        if !v.is_empty() {
            pairs.push((k, v));
        }
    }
    format!("{}?{}", q.path(), super::query_string(pairs))
}

fn command_header(c: &crate::audit::Command, q: &Query) -> Markup {
    html! {
        section.command-header aria-label="Command" {
            h2 { "Command " code { (printable(&c.command_line)) } }
            dl.facts {
                dt { "User" } dd { (printable(&c.user)) }
                dt { "Cluster" } dd { (printable(&c.cluster)) }
                dt { "Started" } dd { (time_cell(c.started_us)) }
                dt { "Duration" } dd { (duration(c.ended_us.map(|e| e - c.started_us))) }
                dt { "Exit" } dd { (exit_label(c)) }
                @if !c.reason.is_empty() {
                    dt { "Reason" } dd { (printable(&c.reason)) }
                }
                dt { "Access method" } dd { (access_label(c.access_method)) }
                dt { "Host" } dd { (printable(&c.host)) }
                dt { "Directory" } dd { (printable(&c.cwd)) }
                dt { "Command id" } dd { code { (c.id.to_string()) } }
            }
            p { a href=(q.link(q.view, &[("id", None)])) { "Show all commands and calls" } }
        }
    }
}

/// The table and its pager; `seq` is where the live rows start.
fn listing(q: &Query, rows: &Rows, next: Option<&Cursor>, seq: i64) -> Markup {
    let first_page = q.after.is_none();
    let live_url = format!("/console/live?view={}&{}", q.view_name(), q.filter_query());
    let export = format!(
        "/audit/kubectl/export.csv?view={}&{}",
        q.view_name(),
        q.filter_query()
    );
    let count = match rows {
        Rows::Calls(r) => r.len(),
        Rows::Commands(r) => r.len(),
    };
    html! {
        div.toolbar {
            @if first_page {
                div.live {
                    span #live-state .live-state role="status" aria-live="polite" { "Live" }
                    button #pause type="button" aria-pressed="false" { "Pause" }
                    button #new-rows .new-rows type="button" hidden { "0 new" }
                }
            } @else {
                div.live { span.live-state { "Older records (not live)" } a href=(q.link(q.view, &[])) { "Back to the newest" } }
            }
            a.button #export href=(export) download { "Export CSV" }
        }
        div.table-wrap {
            table #rows .rows data-view=(q.view_name()) data-live=[first_page.then_some(live_url)]
                data-seq=(seq) {
                @match rows {
                    Rows::Calls(rows) => {
                        caption.sr { "API calls, newest first" }
                        thead { tr {
                            th scope="col" { "Date (UTC)" } th scope="col" { "User" } th scope="col" { "Cluster" }
                            th scope="col" { "Namespace" } th scope="col" { "Resource" } th scope="col" { "Verb" }
                            th scope="col" { "Access method" } th scope="col" { "Status" } th scope="col" { "Duration" }
                            th scope="col" { "Details" }
                        } }
                        tbody { @for r in rows { (call_row(r, q.open == Some(r.call.id))) } }
                    }
                    Rows::Commands(rows) => {
                        caption.sr { "Commands, newest first" }
                        thead { tr {
                            th scope="col" { "Date (UTC)" } th scope="col" { "User" } th scope="col" { "Cluster" }
                            th scope="col" { "Command" } th scope="col" { "Calls" } th scope="col" { "Statuses" }
                            th scope="col" { "Duration" } th scope="col" { "Exit" } th scope="col" { "Access method" }
                        } }
                        tbody { @for r in rows { (command_row(r)) } }
                    }
                }
            }
        }
        @if count == 0 {
            p.empty #empty { "No records match these filters." }
        }
        nav.pager aria-label="Pages" {
            @if !first_page {
                a href=(q.link(q.view, &[])) { "Newest" }
            }
            @if let Some(next) = next {
                a href=(q.link(q.view, &[("after", Some(&cursor_value(next)))])) rel="next" { "Older →" }
            }
        }
    }
}

/// A command's exit code, or `refused` for a command that never ran (its reason says why).
fn exit_label(c: &crate::audit::Command) -> String {
    match c.exit_code {
        Some(e) => e.to_string(),
        None if c.refused() => crate::audit::model::REFUSED.into(),
        None => "–".into(),
    }
}

fn access_label(m: crate::audit::AccessMethod) -> &'static str {
    match m {
        crate::audit::AccessMethod::Cli => "CLI",
        crate::audit::AccessMethod::Browser => "Browser",
        crate::audit::AccessMethod::Api => "API",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "s1",
        200..=299 => "s2",
        300..=399 => "s3",
        400..=499 => "s4",
        500..=599 => "s5",
        _ => "s0",
    }
}

/// One call; `open`: its details shown open (and the row an anchor, `#call-ID`).
fn call_row(r: &CallRow, open: bool) -> Markup {
    let c = &r.call;
    let resource = {
        let mut s = c.resource_label();
        if !c.name.is_empty() {
            s.push(' ');
            s.push_str(&c.name);
        }
        s
    };
    html! {
        tr id=[open.then(|| format!("call-{}", c.id))] data-id=(c.id.to_string()) data-time=(c.time_us) {
            td { (time_cell(c.time_us)) }
            td { (printable(&c.user)) }
            td { (printable(&c.cluster)) }
            td { (printable(&c.namespace)) }
            td.resource { (printable(&resource)) }
            td { (printable(&c.verb)) }
            td { (access_label(c.access_method)) }
            td { span class=(format!("status {}", status_class(c.status))) { (if c.status == 0 { "–".to_string() } else { c.status.to_string() }) } }
            td.num { (duration(Some(c.duration_us))) }
            td {
                details open[open] {
                    summary { "Details" }
                    dl.facts {
                        dt { "Request id" } dd { @match c.request_id { Some(id) => code { (id.to_string()) }, None => "–" } }
                        dt { "Record id" } dd { code { (c.id.to_string()) } }
                        dt { "Time" } dd { (crate::audit::model::format_time_us(c.time_us)) }
                        dt { "Client duration" } dd { (duration(r.client_duration_us)) }
                        dt { "Gateway duration" } dd { (duration(r.gateway_duration_us)) }
                        dt { "Command" } dd {
                            @match (&r.command_line, c.command_id) {
                                (Some(line), Some(id)) => a href=(format!("/audit/kubectl?view=calls&id={id}")) { code { (printable(line)) } },
                                (None, Some(id)) => a href=(format!("/audit/kubectl?view=calls&id={id}")) { code { (id.to_string()) } },
                                _ => "–",
                            }
                        }
                        dt { "Method and path" } dd { code { (printable(&c.method)) " " (printable(&c.path)) @if !c.query.is_empty() { "?" (printable(&c.query)) } } }
                        dt { "API group/version" } dd { (printable(&format!("{}/{}", c.api_group, c.api_version))) }
                        dt { "Decision" } dd { (printable(&c.decision)) }
                        dt { "Reason" } dd { (if c.reason.is_empty() { "–".to_string() } else { printable(&c.reason) }) }
                        dt { "Bytes in / out" } dd { (c.bytes_in) " / " (c.bytes_out) }
                        dt { "User agent" } dd { (printable(&c.user_agent)) }
                        dt { "Source IP" } dd { (printable(&c.source_ip)) }
                        dt { "kubectl command" } dd { (printable(&c.kubectl_command)) }
                    }
                }
            }
        }
    }
}

fn command_row(r: &CommandRow) -> Markup {
    let c = &r.command;
    html! {
        tr data-id=(c.id.to_string()) data-time=(c.started_us) {
            td { (time_cell(c.started_us)) }
            td { (printable(&c.user)) }
            td { (printable(&c.cluster)) }
            td.command { a href=(format!("/audit/kubectl?view=calls&id={}", c.id)) { code { (printable(&c.command_line)) } } }
            td.num { (r.calls) }
            td { @for (class, n) in &r.statuses {
                span class=(format!("status s{}", class.chars().next().unwrap_or('0'))) { (class) ":" (n) } " "
            } }
            td.num { (match r.duration_us { Some(d) => duration(Some(d)), None if c.refused() => "–".into(), None => "running".into() }) }
            td.num title=[(!c.reason.is_empty()).then(|| printable(&c.reason))] { (exit_label(c)) }
            td { (access_label(c.access_method)) }
        }
    }
}

/// `GET /console/live?view=…&FILTERS&after_seq=N`: the rows written after `N` that match, as
/// HTML rows (`{through, rows: [{id, time, html}]}`), as soon as there are some (or none after
/// 20 s); 401 at once when the session ends.
pub async fn live(
    gateway: Arc<Gateway>,
    viewer: &Viewer,
    raw: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    let (q, checked) = Query::parse(raw, viewer, &gateway, false);
    if let Err(refused) = checked {
        return refused.response();
    }
    let after = super::pairs(raw)
        .into_iter()
        .find(|(k, _)| k == "after_seq")
        .and_then(|(_, v)| v.parse::<i64>().ok());
    let Some(after) = after else {
        return body::status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "after_seq (a number) is required",
        );
    };
    let filter = Arc::new(q.filter.clone());
    let deadline = tokio::time::Instant::now() + LIVE_WAIT;
    let headers = headers.clone();
    let gw = gateway.clone();
    let alive = move || super::auth::signed_in(&gw, &headers).is_some();
    let batch = match crate::gateway::api::next_records(
        gateway.audit_store.clone(),
        filter.clone(),
        after,
        LIVE_LIMIT,
        deadline,
        alive,
    )
    .await
    {
        Ok(Some(batch)) => batch,
        Ok(None) => {
            return body::status_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the console session ended; sign in again",
            )
        }
        Err(err) => {
            tracing::error!("console live rows failed: {err}");
            return body::status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the gateway could not read its audit store; see its log",
            );
        }
    };
    let mut rows = Vec::new();
    match q.view {
        View::Calls => {
            for r in &batch.records {
                if let Record::Call(call) = &r.record {
                    rows.push(live_row(
                        call.call.id,
                        call.call.time_us,
                        call_row(call, false),
                    ));
                }
            }
        }
        View::Commands => {
            // A command's row changes with its calls: re-read each touched command (bounded).
            let mut ids = Vec::new();
            for r in &batch.records {
                let id = match &r.record {
                    Record::Command(c) => Some(c.command.id),
                    Record::Call(c) => c.call.command_id,
                };
                if let Some(id) = id {
                    if !ids.contains(&id) && ids.len() < 50 {
                        ids.push(id);
                    }
                }
            }
            let store = gateway.audit_store.clone();
            let base = (*filter).clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                for id in ids {
                    let mut f = base.clone();
                    f.command_id = Some(id);
                    found.extend(store.query_commands(&f, None, 1)?.items);
                }
                Ok::<_, crate::audit::store::StoreError>(found)
            })
            .await;
            match read {
                Ok(Ok(found)) => {
                    for c in &found {
                        rows.push(live_row(c.command.id, c.command.started_us, command_row(c)));
                    }
                }
                Ok(Err(err)) => tracing::error!("console live rows failed: {err}"),
                Err(err) => tracing::error!("console live rows failed: {err}"),
            }
        }
    }
    body::json_response(
        StatusCode::OK,
        &serde_json::json!({ "through": batch.through, "rows": rows }),
    )
}

fn live_row(id: uuid::Uuid, time_us: i64, row: Markup) -> serde_json::Value {
    serde_json::json!({ "id": id.to_string(), "time": time_us, "html": row.into_string() })
}

/// `GET /audit/kubectl/export.csv?view=…&FILTERS`: the whole filtered set (not the rows on
/// screen), streamed from the store as it is read, in `ztk audit export --csv`'s columns.
pub fn export(gateway: &Arc<Gateway>, viewer: &Viewer, raw: &str) -> Response<Body> {
    let (q, checked) = Query::parse(raw, viewer, gateway, false);
    if let Err(refused) = checked {
        return refused.response();
    }
    let name = export_name(&q);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = gateway.audit_store.clone();
    let (view, filter) = (q.view, q.filter.clone());
    tokio::task::spawn_blocking(move || {
        let mut out = Emitter::new(Format::Csv, ChunkWriter::new(tx.clone()));
        let emit = |e: crate::audit::format::FormatError| {
            crate::audit::store::StoreError::Output(e.to_string())
        };
        let result = match view {
            View::Calls => {
                store.for_each_call(&filter, None, None, |row| out.call(&row).map_err(emit))
            }
            View::Commands => {
                store.for_each_command(&filter, None, None, |row| out.command(&row).map_err(emit))
            }
        };
        let finished = result
            .map_err(|e| e.to_string())
            .and_then(|()| {
                out.finish(view == View::Commands)
                    .map_err(|e| e.to_string())
            })
            .and_then(|mut w| w.send().map_err(|e| e.to_string()));
        if let Err(err) = finished {
            // The body ends with an error: the download fails instead of looking complete.
            tracing::warn!("console export ended early: {err}");
            let _ = tx.blocking_send(Err(std::io::Error::other(err)));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    use futures_util::StreamExt as _;
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(
        stream.map(|r| r.map(http_body::Frame::data).map_err(BodyError::new)),
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// `ztk-audit-calls-20261205T1000Z-20261206T1000Z.csv`: the view and the time range.
fn export_name(q: &Query) -> String {
    let stamp = |us: i64| {
        let t = crate::audit::model::format_time_us(us);
        // 2026-12-06T10:00:00.000000Z -> 20261206T1000Z
        let digits: String = t
            .get(..16)
            .unwrap_or(&t)
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        format!("{digits}Z")
    };
    let from = q.filter.since_us.map_or("start".to_string(), stamp);
    let until = stamp(
        q.filter
            .until_us
            .unwrap_or_else(crate::audit::model::now_us),
    );
    format!("ztk-audit-{}-{from}-{until}.csv", q.view_name())
}

/// A `Write` that hands 64 KiB chunks to the response body (waiting while the client reads:
/// memory stays flat whatever the row count). A closed connection ends the export.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChunkWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> ChunkWriter {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = Cursor {
            time_us: 1_733_443_200_000_000,
            id: uuid::Uuid::now_v7().to_string(),
        };
        assert_eq!(parse_cursor(&cursor_value(&c)), Some(c));
        assert_eq!(parse_cursor("12_not-a-uuid"), None);
        assert_eq!(parse_cursor("x"), None);
    }

    #[test]
    fn a_refused_command_shows_refused_and_its_reason() {
        let row = |reason: &str, exit_code: Option<i32>| CommandRow {
            command: crate::audit::Command {
                id: uuid::Uuid::now_v7(),
                command_line: "kubectl config view --raw".into(),
                exit_code,
                reason: reason.into(),
                ..Default::default()
            },
            calls: 0,
            statuses: Default::default(),
            duration_us: None,
        };
        let q = Query {
            view: View::Commands,
            after: None,
            open: None,
            pairs: Vec::new(),
            filter: Filter::default(),
            insights: None,
        };
        let refused = row("refused: kubectl config <b>is</b> not allowed\x1b[2J", None);
        let listed = command_row(&refused).into_string();
        assert!(listed.contains(">refused</td>"), "{listed}");
        assert!(!listed.contains("running"), "{listed}");
        assert!(
            listed.contains(
                r#"title="refused: kubectl config &lt;b&gt;is&lt;/b&gt; not allowed\x1b[2J""#
            ),
            "{listed}"
        );
        let header = command_header(&refused.command, &q).into_string();
        assert!(
            header.contains(r"<dt>Reason</dt><dd>refused: kubectl config &lt;b&gt;is&lt;/b&gt; not allowed\x1b[2J</dd>"),
            "{header}"
        );
        assert!(header.contains("<dt>Exit</dt><dd>refused</dd>"), "{header}");
        // A command that ran normally shows no reason at all, and one still running says so.
        let plain = row("", None);
        assert!(!command_header(&plain.command, &q)
            .into_string()
            .contains("Reason"));
        let listed = command_row(&plain).into_string();
        assert!(
            listed.contains("running") && !listed.contains(r#"class="num" title"#),
            "{listed}"
        );
        // Killed by a limit: its exit code, the reason on hover and in the details.
        let killed = row("killed: output limit", Some(137));
        assert!(command_row(&killed)
            .into_string()
            .contains(r#"title="killed: output limit">137</td>"#));
    }
}
