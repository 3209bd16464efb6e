//! Latency and activity (`/audit/insights`): the same filters and URL query as the audit page,
//! answered by `audit::stats` (the numbers of `ztk audit stats`): per cluster (or user, verb,
//! resource, namespace) the duration percentiles over time, calls per interval, errors by
//! status class, the slowest calls, and the split between the clients' end-to-end duration and
//! the gateway's (what the path between the user and the gateway costs). Charts are SVG drawn
//! here, coloured by the stylesheet, so they follow the theme and need no script.

use std::sync::Arc;

use http::{Response, StatusCode};
use maud::{html, Markup};

use super::audit::{frame, Query};
use super::auth::Viewer;
use super::layout::{self, duration, printable, time_cell, Nav};
use crate::audit::stats::{GroupStats, Point, Stats, StatsQuery};
use crate::body::Body;
use crate::gateway::Gateway;

/// Intervals the automatic choice picks from, and how many points it aims for at most.
const NICE: [i64; 8] = [
    60,
    300,
    900,
    3600,
    6 * 3600,
    86_400,
    7 * 86_400,
    30 * 86_400,
];
const TARGET_POINTS: i64 = 60;
const SLOWEST: usize = 10;

pub async fn page(gateway: &Arc<Gateway>, viewer: &Viewer, raw: &str) -> Response<Body> {
    let (q, checked) = Query::parse(raw, viewer, gateway, true);
    let suggestions = {
        let gw = gateway.clone();
        let viewer = viewer.clone();
        tokio::task::spawn_blocking(move || gw.console.suggestions.get(&gw, &viewer))
            .await
            .unwrap_or_default()
    };
    let render = |status: StatusCode, error: Option<&str>, body: Option<Markup>| {
        let content = frame(&q, viewer, &suggestions, error, body, None);
        super::html(
            status,
            layout::page("Latency and activity", Some(viewer), Nav::Insights, content),
        )
    };
    if let Err(refused) = checked {
        return render(refused.status, Some(&refused.message), None);
    }
    let now = crate::audit::model::now_us();
    let (by, interval) = q.insights.clone().unwrap_or_default();
    let interval_us = if interval.is_empty() {
        auto_interval(
            q.filter.since_us.unwrap_or(now),
            q.filter.until_us.unwrap_or(now),
        )
    } else {
        match crate::audit::filter::parse_duration_us(&interval) {
            Ok(us) => us,
            Err(e) => return render(StatusCode::BAD_REQUEST, Some(&e.to_string()), None),
        }
    };
    let query = StatsQuery {
        filter: q.filter.clone(),
        by,
        interval_us,
        slowest: SLOWEST,
    };
    if let Err(message) = query.check(now) {
        return render(StatusCode::BAD_REQUEST, Some(&message), None);
    }
    let store = gateway.audit_store.clone();
    let started = std::time::Instant::now();
    let stats = match tokio::task::spawn_blocking(move || store.stats(&query)).await {
        Ok(Ok(stats)) => stats,
        Ok(Err(err)) => {
            tracing::error!("console insights failed: {err}");
            return render(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("The gateway could not read its audit store; see its log."),
                None,
            );
        }
        Err(err) => {
            tracing::error!("console insights failed: {err}");
            return render(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("The gateway could not compute the statistics; see its log."),
                None,
            );
        }
    };
    let took = started.elapsed();
    render(StatusCode::OK, None, Some(body(&q, &stats, took)))
}

fn auto_interval(since: i64, until: i64) -> i64 {
    let range = ((until - since) / 1_000_000).max(60);
    let secs = NICE
        .iter()
        .copied()
        .find(|i| range / i <= TARGET_POINTS)
        .unwrap_or(NICE[NICE.len() - 1]);
    secs * 1_000_000
}

fn body(q: &Query, stats: &Stats, took: std::time::Duration) -> Markup {
    let t = &stats.total;
    let errors: u64 = t
        .statuses
        .iter()
        .filter(|(c, _)| matches!(c.as_str(), "4xx" | "5xx" | "err"))
        .map(|(_, n)| n)
        .sum();
    let path_cost = match (t.client_p50_us, t.p50_us) {
        (Some(c), Some(g)) => Some(c - g),
        _ => None,
    };
    let by = stats.by.as_str();
    let top: Vec<&GroupStats> = stats.groups.iter().take(5).collect();
    html! {
        section.cards aria-label="Summary" {
            div.card { span.label { "Calls" } span.value { (t.calls) } span.muted { (format!("{:.1}", t.per_minute)) " per minute" } }
            div.card { span.label { "Errors" } span.value { (errors) }
                span.muted { @for (class, n) in &t.statuses { (class) ":" (n) " " } } }
            div.card { span.label { "Duration p50 / p95 / p99" } span.value { (duration(t.p50_us)) } span.muted { (duration(t.p95_us)) " / " (duration(t.p99_us)) } }
            div.card { span.label { "Client end-to-end p50" } span.value { (duration(t.client_p50_us)) }
                span.muted { @match path_cost {
                    Some(c) => { "the path to the gateway adds " (duration(Some(c.max(0)))) " at the median" },
                    None => "no client measurements in this range",
                } } }
        }
        @if t.calls == 0 {
            p.empty { "No calls match these filters in this range." }
        } @else {
            div.charts {
                figure.chart {
                    figcaption { "Duration at the gateway, all " (by) "s (every " (interval_label(stats.interval_us)) ")" }
                    (line_chart(stats, &[
                        ("p50", "p50", pick(&stats.total_series, |p| p.p50_us)),
                        ("p95", "p95", pick(&stats.total_series, |p| p.p95_us)),
                        ("p99", "p99", pick(&stats.total_series, |p| p.p99_us)),
                    ]))
                }
                figure.chart {
                    figcaption { "Calls per minute, by outcome (every " (interval_label(stats.interval_us)) ")" }
                    (bar_chart(stats))
                }
                figure.chart {
                    figcaption { "p95 per " (by) " (the five busiest)" }
                    (line_chart(stats, &top.iter().enumerate().map(|(i, g)| {
                        let points: Vec<&Point> = stats.series.iter().filter(|p| p.key == g.key).collect();
                        (g.key.as_str(), ["g0", "g1", "g2", "g3", "g4"][i], points.iter().map(|p| (p.start_us, p.p95_us)).collect())
                    }).collect::<Vec<_>>()))
                }
            }
            h2 { "Per " (by) }
            div.table-wrap { table.rows #groups {
                thead { tr {
                    th scope="col" { (by) } th scope="col" { "Calls" } th scope="col" { "Per minute" }
                    th scope="col" { "Statuses" } th scope="col" { "p50" } th scope="col" { "p95" } th scope="col" { "p99" }
                    th scope="col" { "Max" } th scope="col" { "Client p50" } th scope="col" { "Client p99" } th scope="col" { "Path cost (p50)" }
                } }
                tbody {
                    @for g in &stats.groups {
                        tr {
                            td { a href=(q.calls_link(&[(by, Some(g.key.as_str()))])) { (printable(&g.key)) } }
                            td.num { (g.calls) }
                            td.num { (format!("{:.1}", g.per_minute)) }
                            td { @for (class, n) in &g.statuses {
                                span class=(format!("status s{}", class.chars().next().unwrap_or('0'))) { (class) ":" (n) } " "
                            } }
                            td.num { (duration(g.p50_us)) } td.num { (duration(g.p95_us)) } td.num { (duration(g.p99_us)) }
                            td.num { (duration(g.max_us)) }
                            td.num { (duration(g.client_p50_us)) } td.num { (duration(g.client_p99_us)) }
                            td.num { (match (g.client_p50_us, g.p50_us) { (Some(c), Some(p)) => duration(Some((c - p).max(0))), _ => "–".into() }) }
                        }
                    }
                }
            } }
            h2 { "Slowest calls" }
            div.table-wrap { table.rows #slowest {
                thead { tr {
                    th scope="col" { "Date (UTC)" } th scope="col" { "User" } th scope="col" { "Cluster" }
                    th scope="col" { "Verb" } th scope="col" { "Resource" } th scope="col" { "Status" } th scope="col" { "Duration" }
                } }
                tbody {
                    @for r in &stats.slowest {
                        @let c = &r.call;
                        @let at = crate::audit::model::format_time_us(c.time_us);
                        @let after = crate::audit::model::format_time_us(c.time_us + 1);
                        @let id = c.id.to_string();
                        tr {
                            // The record itself, its details open.
                            td { a href=(format!("/audit/kubectl?{}#call-{id}", super::query_string([
                                ("view", "calls"), ("since", at.as_str()), ("until", after.as_str()),
                                ("user", c.user.as_str()), ("cluster", c.cluster.as_str()), ("open", id.as_str())]))) { (time_cell(c.time_us)) } }
                            td { (printable(&c.user)) } td { (printable(&c.cluster)) } td { (printable(&c.verb)) }
                            td { (printable(&c.resource_label())) }
                            td { span class=(format!("status s{}", c.status / 100)) { (c.status) } }
                            td.num { (duration(Some(c.duration_us))) }
                        }
                    }
                }
            } }
        }
        p.muted.small {
            "Durations at the gateway cover the gateway and the cluster; client durations are what ztk on the user's machine measured end to end, for the calls it shipped. "
            "Percentiles are read from histograms with 16 buckets per doubling (within 2.2 %). Computed in " (format!("{:.0}", took.as_secs_f64() * 1000.0)) " ms."
        }
    }
}

/// `5m`, `6h`, `1d`.
fn interval_label(us: i64) -> String {
    let secs = us / 1_000_000;
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}m", s / 60),
    }
}

fn pick(points: &[Point], f: impl Fn(&Point) -> Option<i64>) -> Vec<(i64, Option<i64>)> {
    points.iter().map(|p| (p.start_us, f(p))).collect()
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

fn x_of(stats: &Stats, t: i64) -> f64 {
    let start = stats.since_us.unwrap_or_else(|| {
        stats
            .total_series
            .first()
            .map_or(stats.until_us, |p| p.start_us)
    });
    let span = (stats.until_us - start).max(1) as f64;
    LEFT + (W - LEFT - RIGHT) * ((t - start) as f64 / span).clamp(0.0, 1.0)
}

fn axes(stats: &Stats, max: f64, label: impl Fn(f64) -> String) -> Markup {
    let start = stats.since_us.unwrap_or_else(|| {
        stats
            .total_series
            .first()
            .map_or(stats.until_us, |p| p.start_us)
    });
    let long = stats.until_us - start > 2 * 86_400_000_000;
    html! {
        g.axis {
            @for i in 0..=4 {
                @let y = TOP + (H - TOP - BOTTOM) * (1.0 - f64::from(i) / 4.0);
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y) y2=(y) {}
                text x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (label(max * f64::from(i) / 4.0)) }
            }
            @for i in 0..=4 {
                @let t = start + (stats.until_us - start) * i / 4;
                @let full = crate::audit::model::format_time_us(t);
                text x=(x_of(stats, t)) y=(H - 8.0) text-anchor="middle" {
                    (if long { full.get(5..16).unwrap_or("").replace('T', " ") } else { full.get(11..16).unwrap_or("").to_string() })
                }
            }
        }
    }
}

/// One line of a chart: its name, its CSS class, and its points (time, value if any).
type Line<'a> = (&'a str, &'a str, Vec<(i64, Option<i64>)>);

fn line_chart(stats: &Stats, lines: &[Line]) -> Markup {
    let max = lines
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().filter_map(|(_, v)| *v))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let y_of = |v: i64| TOP + (H - TOP - BOTTOM) * (1.0 - v as f64 / max);
    let description = lines
        .iter()
        .map(|(name, _, pts)| {
            let vals: Vec<String> = pts
                .iter()
                .filter_map(|(_, v)| v.map(crate::audit::format::format_duration_us))
                .collect();
            format!("{name}: {}", vals.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(description) {
            (axes(stats, max, |v| crate::audit::format::format_duration_us(v as i64)))
            @for (_, class, pts) in lines {
                @for segment in segments(pts) {
                    @if segment.len() == 1 {
                        circle class=(format!("dot {class}")) cx=(x_of(stats, segment[0].0)) cy=(y_of(segment[0].1)) r="2.5" {}
                    } @else {
                        polyline class=(format!("line {class}")) points=(segment.iter().map(|(t, v)| format!("{:.1},{:.1}", x_of(stats, *t), y_of(*v))).collect::<Vec<_>>().join(" ")) {}
                    }
                }
            }
        }
        ul.legend {
            @for (name, class, _) in lines {
                li { span class=(format!("swatch {class}")) {} (printable(name)) }
            }
        }
    }
}

/// Runs of consecutive points that have a value.
fn segments(points: &[(i64, Option<i64>)]) -> Vec<Vec<(i64, i64)>> {
    let mut out: Vec<Vec<(i64, i64)>> = Vec::new();
    let mut current = Vec::new();
    for (t, v) in points {
        match v {
            Some(v) => current.push((*t, *v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One part of a stacked bar: its CSS class, top and height.
type Segment = (&'static str, f64, f64);

/// Calls per minute in each interval, stacked by outcome: answered without error, client
/// errors (4xx), server errors (5xx), no answer.
fn bar_chart(stats: &Stats) -> Markup {
    const LAYERS: [(&str, &str, &str); 4] = [
        ("", "ok", "answered (1xx–3xx)"),
        ("4xx", "e4", "client errors (4xx)"),
        ("5xx", "e5", "server errors (5xx)"),
        ("err", "en", "no answer"),
    ];
    let minutes = (stats.interval_us as f64 / 60e6).max(1e-9);
    let layer = |p: &Point, class: &str| -> f64 {
        let n = if class.is_empty() {
            p.calls - p.errors
        } else {
            p.statuses.get(class).copied().unwrap_or(0)
        };
        n as f64 / minutes
    };
    let max = stats
        .total_series
        .iter()
        .map(|p| p.calls as f64 / minutes)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let width = (x_of(stats, stats.interval_us + stats.since_us.unwrap_or(0))
        - x_of(stats, stats.since_us.unwrap_or(0)))
    .max(2.0)
        * 0.8;
    let y_of = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / max);
    let rate = |v: f64| {
        if v >= 10.0 || v == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let description = stats
        .total_series
        .iter()
        .map(|p| {
            let parts: Vec<String> = LAYERS
                .iter()
                .map(|(class, _, name)| format!("{} {name}", rate(layer(p, class))))
                .collect();
            format!(
                "{}: {} per minute ({})",
                crate::audit::model::format_time_us(p.start_us),
                rate(p.calls as f64 / minutes),
                parts.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    // Each interval's x and its stack, from the bottom up.
    let bars: Vec<(f64, Vec<Segment>)> = stats
        .total_series
        .iter()
        .map(|p| {
            let mut below = 0.0;
            let stack = LAYERS
                .iter()
                .filter_map(|(class, css, _)| {
                    let v = layer(p, class);
                    let part = (*css, y_of(below + v), y_of(below) - y_of(below + v));
                    below += v;
                    (v > 0.0).then_some(part)
                })
                .collect();
            (x_of(stats, p.start_us), stack)
        })
        .collect();
    html! {
        svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(description) {
            (axes(stats, max, rate))
            @for (x, stack) in &bars {
                @for (css, y, height) in stack {
                    rect class=(format!("bar {css}")) x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                        width=(format!("{width:.1}")) height=(format!("{height:.1}")) {}
                }
            }
        }
        ul.legend {
            @for (_, css, name) in LAYERS {
                li { span class=(format!("swatch {css}")) {} (name) }
            }
        }
    }
}
