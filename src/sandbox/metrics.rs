//! `metrics.k8s.io/v1beta1`, as metrics-server serves it behind the aggregator: `PodMetrics`
//! and `NodeMetrics`, get and list only, for `kubectl top`.
//!
//! The sandbox runs no containers, so usage is made up, but plausibly: every running
//! container gets a base CPU and memory derived from its namespace, pod and name, which drifts
//! slowly (a few percent a minute) so that two `kubectl top` a second apart agree while a demo
//! an hour long sees movement. Quantities are in the units metrics-server reports: CPU in
//! nanocores (`n`), memory (the working set) in `Ki`, both in Kubernetes' canonical form.

use std::f64::consts::PI;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::api::Req;
use super::discovery::fnv64;
use super::store::res_key;
use super::table::{row_object, IncludeObject};
use super::{json_ok, method_not_allowed, status_with_details};
use crate::body::{self, Body};

pub const GROUP: &str = "metrics.k8s.io";

/// metrics-server's default `--metric-resolution`.
const RESOLUTION_SECS: i64 = 15;

/// What the node itself uses outside pods (kubelet, containerd, the OS).
const NODE_SYSTEM_CPU_NANO: u64 = 185_000_000;
const NODE_SYSTEM_MEMORY_KI: u64 = 1_048_576 + 214_731;

/// Answers a request for `pods` or `nodes` of `metrics.k8s.io`.
pub fn handle(req: &Req<'_>, method: &Method) -> Response<Body> {
    if req.sub.is_some() {
        return super::not_found_path();
    }
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(method);
    }
    if req
        .query
        .get("watch")
        .is_some_and(|w| crate::request_info::go_bool(w))
    {
        return method_not_allowed(method);
    }
    let now = OffsetDateTime::now_utc();
    let nodes = req.res.name == "nodes";
    let (label, field) = match req.selectors() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match req.name {
        Some(name) => {
            let source_key = res_key("", if nodes { "nodes" } else { "pods" });
            let Some(obj) = req.sandbox.store.get(&source_key, req.ns(), name) else {
                // metrics-server looks the pod (node) up first: its lister's NotFound.
                let what = if nodes { "nodes" } else { "pods" };
                return body::status_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{what} \"{name}\" not found"),
                );
            };
            let item = if nodes {
                Some(node_metrics(req, &obj, now))
            } else {
                pod_metrics(&obj, now)
            };
            match item {
                Some(item) => one(req, item),
                None => status_with_details(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{}.{GROUP} \"{}/{name}\" not found", req.res.name, req.ns()),
                    req.res,
                    &format!("{}/{name}", req.ns()),
                ),
            }
        }
        None => {
            let items: Vec<Value> = if nodes {
                let (all, _) = req.sandbox.store.list(&res_key("", "nodes"), None);
                all.iter()
                    .filter(|n| label.matches(n) && field.matches(n))
                    .map(|n| node_metrics(req, n, now))
                    .collect()
            } else {
                let (all, _) = req.sandbox.store.list(&res_key("", "pods"), req.namespace);
                all.iter()
                    .filter(|p| label.matches(p) && field.matches(p))
                    .filter_map(|p| pod_metrics(p, now))
                    .collect()
            };
            many(req, items)
        }
    }
}

fn kind(req: &Req<'_>) -> &'static str {
    if req.res.name == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    }
}

fn one(req: &Req<'_>, mut item: Value) -> Response<Body> {
    if req.table() {
        return json_ok(&table(req, &[item]));
    }
    item["kind"] = json!(kind(req));
    item["apiVersion"] = json!(format!("{GROUP}/v1beta1"));
    json_ok(&item)
}

fn many(req: &Req<'_>, items: Vec<Value>) -> Response<Body> {
    if req.table() {
        return json_ok(&table(req, &items));
    }
    json_ok(&json!({
        "kind": format!("{}List", kind(req)),
        "apiVersion": format!("{GROUP}/v1beta1"),
        "metadata": {},
        "items": items,
    }))
}

/// metrics-server's own table convertor: Name, one column per resource (sorted: cpu, memory,
/// each a quantity, summed over a pod's containers), Window.
fn table(req: &Req<'_>, items: &[Value]) -> Value {
    let include = req.include();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let (cpu, memory) = match item.get("usage") {
                Some(usage) => (
                    parse_nano(usage["cpu"].as_str().unwrap_or("0")),
                    parse_ki(usage["memory"].as_str().unwrap_or("0")),
                ),
                None => item["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .fold((0, 0), |(c, m), ctr| {
                        (
                            c + parse_nano(ctr["usage"]["cpu"].as_str().unwrap_or("0")),
                            m + parse_ki(ctr["usage"]["memory"].as_str().unwrap_or("0")),
                        )
                    }),
            };
            let mut object = item.clone();
            object["kind"] = json!(kind(req));
            object["apiVersion"] = json!(format!("{GROUP}/v1beta1"));
            let mut row = json!({
                "cells": [item["metadata"]["name"], cpu_quantity(cpu), memory_quantity(memory), item["window"]],
                "object": row_object(&object, include),
            });
            if include == IncludeObject::None {
                if let Some(m) = row.as_object_mut() {
                    m.remove("object");
                }
            }
            row
        })
        .collect();
    let columns = if items.is_empty() {
        Value::Null
    } else {
        json!([
            {"name": "Name", "type": "string", "format": "name", "description": "Name of the resource", "priority": 0},
            {"name": "cpu", "type": "string", "format": "quantity", "description": "", "priority": 0},
            {"name": "memory", "type": "string", "format": "quantity", "description": "", "priority": 0},
            {"name": "Window", "type": "string", "format": "duration", "description": "", "priority": 0},
        ])
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": if items.is_empty() { Value::Null } else { json!(rows) },
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The last scrape before `now` (every `RESOLUTION_SECS`, offset per object) and the window
/// it covers, formatted as Go's `time.Duration` prints it (`15.021s`).
fn scrape(seed: &str, now: OffsetDateTime) -> (String, String) {
    let h = fnv64(seed.as_bytes());
    let offset = (h % RESOLUTION_SECS as u64) as i64;
    let t = now.unix_timestamp();
    let last = t - (t - offset).rem_euclid(RESOLUTION_SECS);
    let window_ms = RESOLUTION_SECS * 1000 + ((h >> 8) % 90) as i64 + 3;
    let at = OffsetDateTime::from_unix_timestamp(last).unwrap_or(now);
    let window = format!("{}.{:03}s", window_ms / 1000, window_ms % 1000);
    (rfc3339(at), window.replace(".000s", "s"))
}

/// A value around `base` that moves slowly with time (periods of tens of minutes).
fn drift(base: f64, seed: u64, now: OffsetDateTime) -> f64 {
    let minutes = now.unix_timestamp() as f64 / 60.0;
    let phase = (seed % 1000) as f64 / 1000.0 * 2.0 * PI;
    let period = 20.0 + (seed >> 12) as f64 % 40.0;
    base * (1.0 + 0.15 * (2.0 * PI * minutes / period + phase).sin())
}

/// (nanocores, KiB) a container of `image` uses at `now`.
fn container_usage(
    ns: &str,
    pod: &str,
    container: &str,
    image: &str,
    now: OffsetDateTime,
) -> (u64, u64) {
    let seed = fnv64(format!("{ns}/{pod}/{container}").as_bytes());
    // Control-plane components are busier than a demo app; everything else idles.
    let (cpu_range, mem_range_mi) = match image.split([':', '@']).next().unwrap_or("") {
        i if i.contains("kube-apiserver") => ((30, 90), (250, 420)),
        i if i.contains("etcd") => ((15, 45), (40, 90)),
        i if i.contains("kube-controller-manager") => ((10, 30), (40, 70)),
        i if i.contains("kube-scheduler") => ((2, 8), (18, 30)),
        i if i.contains("coredns") => ((1, 5), (12, 22)),
        i if i.contains("nginx") => ((0, 3), (3, 12)),
        i if i.contains("busybox") => ((0, 1), (0, 2)),
        _ => ((1, 25), (20, 160)),
    };
    let pick =
        |(lo, hi): (u64, u64), s: u64| lo as f64 + (s % 1000) as f64 / 1000.0 * (hi - lo) as f64;
    let cpu_milli = pick(cpu_range, seed) + 0.25;
    let mem_mi = pick(mem_range_mi, seed >> 20) + 0.6;
    let cpu = drift(cpu_milli * 1_000_000.0, seed, now) as u64;
    let mem = drift(mem_mi * 1024.0, seed >> 7, now) as u64;
    // Nanocores are never a round number, nor is a working set.
    (cpu | 1, mem.max(1) | 1)
}

fn is_running(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// The PodMetrics of a running pod (metrics-server has none for pods that do not run).
fn pod_metrics(pod: &Value, now: OffsetDateTime) -> Option<Value> {
    if !is_running(pod) {
        return None;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let cname = c["name"].as_str().unwrap_or("");
            let (cpu, mem) = container_usage(ns, name, cname, c["image"].as_str().unwrap_or(""), now);
            json!({"name": cname, "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}})
        })
        .collect();
    let (timestamp, window) = scrape(&format!("{ns}/{name}"), now);
    let mut meta = json!({"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)});
    if let Some(labels) = pod.pointer("/metadata/labels").filter(|l| l.is_object()) {
        meta["labels"] = labels.clone();
    }
    Some(json!({
        "metadata": meta,
        "timestamp": timestamp,
        "window": window,
        "containers": containers,
    }))
}

/// A node's usage: its pods' plus the system's.
fn node_metrics(req: &Req<'_>, node: &Value, now: OffsetDateTime) -> Value {
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    let (pods, _) = req.sandbox.store.list(&res_key("", "pods"), None);
    let (mut cpu, mut mem) = (
        drift(NODE_SYSTEM_CPU_NANO as f64, fnv64(name.as_bytes()), now) as u64,
        drift(
            NODE_SYSTEM_MEMORY_KI as f64,
            fnv64(name.as_bytes()) >> 9,
            now,
        ) as u64,
    );
    for pod in pods
        .iter()
        .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name))
    {
        for c in pod_metrics(pod, now)
            .and_then(|m| m["containers"].as_array().cloned())
            .unwrap_or_default()
        {
            cpu += parse_nano(c["usage"]["cpu"].as_str().unwrap_or("0"));
            mem += parse_ki(c["usage"]["memory"].as_str().unwrap_or("0"));
        }
    }
    let (timestamp, window) = scrape(name, now);
    let mut meta = json!({"name": name, "creationTimestamp": rfc3339(now)});
    if let Some(labels) = node.pointer("/metadata/labels").filter(|l| l.is_object()) {
        meta["labels"] = labels.clone();
    }
    json!({
        "metadata": meta,
        "timestamp": timestamp,
        "window": window,
        "usage": {"cpu": cpu_quantity(cpu | 1), "memory": memory_quantity(mem | 1)},
    })
}

/// Nanocores in canonical DecimalSI form: `2339215n`, `15u`, `3m`, `2`.
pub fn cpu_quantity(nano: u64) -> String {
    if nano == 0 {
        return "0".into();
    }
    let mut v = nano;
    for suffix in ["n", "u", "m"] {
        if v % 1000 != 0 {
            return format!("{v}{suffix}");
        }
        v /= 1000;
    }
    v.to_string()
}

/// KiB in canonical BinarySI form: `14196Ki`, `12Mi`.
pub fn memory_quantity(ki: u64) -> String {
    if ki == 0 {
        return "0".into();
    }
    let mut v = ki;
    for suffix in ["Ki", "Mi", "Gi", "Ti"] {
        if v % 1024 != 0 {
            return format!("{v}{suffix}");
        }
        v /= 1024;
    }
    format!("{v}Pi")
}

fn parse_nano(q: &str) -> u64 {
    let (num, mult) = match q {
        q if q.ends_with('n') => (&q[..q.len() - 1], 1),
        q if q.ends_with('u') => (&q[..q.len() - 1], 1_000),
        q if q.ends_with('m') => (&q[..q.len() - 1], 1_000_000),
        q => (q, 1_000_000_000),
    };
    num.parse::<u64>().unwrap_or(0) * mult
}

fn parse_ki(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64),
        ("Mi", 1024),
        ("Gi", 1 << 20),
        ("Ti", 1 << 30),
        ("Pi", 1 << 40),
    ];
    for (suffix, mult) in units {
        if let Some(num) = q.strip_suffix(suffix) {
            return num.parse::<u64>().unwrap_or(0) * mult;
        }
    }
    q.parse::<u64>().unwrap_or(0) / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical_and_round_trip() {
        assert_eq!(cpu_quantity(2_339_215), "2339215n");
        assert_eq!(cpu_quantity(15_000), "15u");
        assert_eq!(cpu_quantity(3_000_000), "3m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(memory_quantity(14_196), "14196Ki");
        assert_eq!(memory_quantity(12 * 1024), "12Mi");
        for n in [1u64, 999, 1_000, 123_456_789, 5_000_000_000] {
            assert_eq!(parse_nano(&cpu_quantity(n)), n);
        }
        for k in [1u64, 1024, 1025, 3 << 20] {
            assert_eq!(parse_ki(&memory_quantity(k)), k);
        }
    }

    #[test]
    fn usage_is_stable_within_a_minute_and_drifts_slowly() {
        let t = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let a = container_usage("dev", "web-1", "web", "nginx:1.25", t);
        let b = container_usage(
            "dev",
            "web-1",
            "web",
            "nginx:1.25",
            t + time::Duration::seconds(1),
        );
        assert!(a.0.abs_diff(b.0) * 100 <= a.0, "{a:?} {b:?}");
        let other = container_usage("dev", "web-2", "web", "nginx:1.25", t);
        assert_ne!(a, other, "pods differ");
        let hour_later = container_usage(
            "dev",
            "web-1",
            "web",
            "nginx:1.25",
            t + time::Duration::minutes(17),
        );
        assert_ne!(a, hour_later, "usage moves");
        let api = container_usage(
            "kube-system",
            "kube-apiserver-n",
            "kube-apiserver",
            "registry.k8s.io/kube-apiserver:v1.32.0",
            t,
        );
        assert!(api.0 > 20_000_000 && api.1 > 200 * 1024, "{api:?}");
        let (ts, window) = scrape("dev/web-1", t);
        assert!(
            ts.ends_with('Z') && window.starts_with("15.") && window.ends_with('s'),
            "{ts} {window}"
        );
    }
}
