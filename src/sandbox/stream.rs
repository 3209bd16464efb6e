//! The two never-ending answers: watches and followed pod logs. Both are streamed bodies fed
//! chunk by chunk; they end when their timeout passes or when hyper drops the body because the
//! client went away.

// Errors here are finished HTTP responses (a k8s Status), made at most once per request;
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::api::{present, Req};
use super::discovery::ResourceInfo;
use super::ephemeral;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, StoreError};
use super::table::{self, IncludeObject};
use super::{bad_request, status, store_error, Sandbox};
use crate::body::{Body, BoxError};

/// Watches without `timeoutSeconds` end after this long, like the apiserver's
/// `--min-request-timeout` (clients simply re-watch).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A body fed by a producer task through a small channel: the producer notices a departed
/// client (the receiver is dropped with the body) at its next send or via `Sender::closed`.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn streaming_response(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut resp = Response::new(crate::body::boxed(ChannelBody(rx)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// `GET /api/v1/watch/namespaces/ns/pods/name`: a watch of one object.
pub fn watch_one(req: &Req<'_>, name: &str) -> Response<Body> {
    watch_with(req, Some(name))
}

pub fn watch(req: &Req<'_>) -> Response<Body> {
    watch_with(req, None)
}

struct WatchFilter {
    res: ResourceInfo,
    namespace: Option<String>,
    label: LabelSelector,
    field: FieldSelector,
    table: bool,
    include: IncludeObject,
}

impl WatchFilter {
    fn matches(&self, ev: &Event) -> bool {
        ev.res == self.res.store_key()
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ev.namespace == ns)
            && self.label.matches(&ev.object)
            && self.field.matches(&ev.object)
    }

    /// One `{"type":…,"object":…}` line; in table mode the object is a one-row Table, with
    /// column definitions only in the first event of the stream (as the apiserver sends).
    fn encode(&self, ev: &Event, first: bool) -> Bytes {
        let object = present(&self.res, ev.object.clone());
        let object = if self.table {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            table::to_table(&self.res, &[object], self.include, &rv, first)
        } else {
            object
        };
        let mut line = serde_json::to_vec(&json!({"type": ev.kind.as_str(), "object": object}))
            .unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn watch_with(req: &Req<'_>, name: Option<&str>) -> Response<Body> {
    let (label, mut field) = match req.selectors() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Some(name) = name {
        field = match FieldSelector::parse(&format!("metadata.name={name}")) {
            Ok(f) => f,
            Err(e) => return bad_request(&e),
        };
    }
    // Streaming lists (client-go's WatchList) ask for the current state as events, closed by
    // a bookmark, whatever resourceVersion they name.
    let initial_events = req
        .query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true");
    let rv = match req.query.get("resourceVersion").map(String::as_str) {
        _ if initial_events => None,
        None | Some("") | Some("0") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return bad_request(&format!("invalid resource version: {s}")),
        },
    };
    let timeout = match req.query.get("timeoutSeconds") {
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Duration::from_secs(n),
            Err(_) => return bad_request(&format!("invalid timeoutSeconds: {s}")),
        },
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let filter = WatchFilter {
        res: req.res.clone(),
        namespace: req.namespace.map(String::from),
        label,
        field,
        table: req.table(),
        include: req.include(),
    };
    let start = match req.sandbox.store.watch(&req.key(), req.namespace, rv) {
        Ok(start) => start,
        Err(_) => {
            return status(
                StatusCode::GONE,
                "Expired",
                &format!(
                    "too old resource version: {} ({})",
                    rv.unwrap_or(0),
                    req.sandbox.store.resource_version()
                ),
            )
        }
    };

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut pending: VecDeque<Arc<Event>> = start.initial.into();
    let mut events = start.rx;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bookmark = initial_events.then(|| {
        let rv = req.sandbox.store.resource_version().to_string();
        let mut line = serde_json::to_vec(&json!({
            "type": "BOOKMARK",
            "object": {
                "kind": req.res.kind, "apiVersion": req.res.api_version(),
                "metadata": {"resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}},
            },
        }))
        .unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    });
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if pending.is_empty() {
                if let Some(line) = bookmark.take() {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            let ev = match pending.pop_front() {
                Some(ev) => ev,
                None => tokio::select! {
                    got = events.recv() => match got {
                        Ok(ev) => ev,
                        // Fell behind or the store is gone: end the watch; the client re-lists.
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                },
            };
            if !filter.matches(&ev) {
                continue;
            }
            let chunk = filter.encode(&ev, first);
            first = false;
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    streaming_response("application/json", rx)
}

const LOG_MESSAGES: &[&str] = &[
    "starting {c} (pod {p})",
    "loaded configuration from /etc/{c}/config.yaml",
    "listening on 0.0.0.0:8080",
    "connected to upstream services",
    "readiness probe passed",
    "GET /healthz 200 1ms",
    "GET /api/v1/items 200 12ms",
    "POST /api/v1/orders 201 34ms",
    "cache warmed: 128 entries",
    "GET /api/v1/items/42 200 4ms",
    "background job sync-inventory finished in 210ms",
    "GET /healthz 200 1ms",
];

fn log_line(
    pod: &str,
    container: &str,
    i: u64,
    at: time::OffsetDateTime,
    timestamps: bool,
) -> String {
    let msg = LOG_MESSAGES[(i as usize) % LOG_MESSAGES.len()]
        .replace("{c}", container)
        .replace("{p}", pod);
    let level = if i % 7 == 6 { "WARN" } else { "INFO" };
    let mut line = format!("{level} [{pod}/{container}] #{i} {msg}\n");
    if timestamps {
        let ts = at
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
            ))
            .unwrap_or_default();
        line = format!("{ts} {line}");
    }
    line
}

/// The log of an ephemeral container: what it printed (see `exec::ephemeral_log`), `tailLines`
/// applied. It ends there, `follow` or not: a debugging shell logs nothing on its own.
fn ephemeral_logs(req: &Req<'_>, container: &Value) -> Response<Body> {
    let log = super::exec::ephemeral_log(req.sandbox, req.ns(), req.name(), container);
    let text = String::from_utf8_lossy(&log).into_owned();
    let text = match req
        .query
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
    {
        Some(n) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
        None => text,
    };
    let mut resp = Response::new(crate::body::full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// `GET …/pods/<name>/log`: a deterministic log per pod and container.
pub fn logs(req: &Req<'_>) -> Response<Body> {
    let Some(pod) = req.sandbox.store.get(&req.key(), req.ns(), req.name()) else {
        return store_error(StoreError::NotFound, req.res, req.name());
    };
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let pod_name = req.name().to_string();
    let container = match req.query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) if ephemeral::is_ephemeral(&pod, c) => {
            let spec = ephemeral::find_container(&pod, c)
                .cloned()
                .unwrap_or_default();
            return ephemeral_logs(req, &spec);
        }
        // Init containers log like the others.
        Some(c) if ephemeral::find_container(&pod, c).is_some() => c.clone(),
        Some(c) => {
            return bad_request(&format!("container {c} is not valid for pod {pod_name}"));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return bad_request(&format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            ))
        }
    };
    let parse_num = |k: &str| -> Result<Option<u64>, Response<Body>> {
        match req.query.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(|n| Some(n.max(0) as u64))
                .map_err(|_| bad_request(&format!("invalid {k}: {v}"))),
        }
    };
    let tail = match parse_num("tailLines") {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let timestamps = req
        .query
        .get("timestamps")
        .is_some_and(|v| crate::request_info::go_bool(v));
    let follow = req
        .query
        .get("follow")
        .is_some_and(|v| crate::request_info::go_bool(v));
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc);

    // A pod's history: a fixed number of lines from its start.
    const HISTORY_LINES: u64 = 20;
    let first = tail.map_or(0, |t| HISTORY_LINES.saturating_sub(t));
    let history: String = (first..HISTORY_LINES)
        .map(|i| {
            log_line(
                &pod_name,
                &container,
                i,
                created + time::Duration::seconds(i as i64),
                timestamps,
            )
        })
        .collect();
    if !follow {
        let mut resp = Response::new(crate::body::full(history));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }

    let sandbox: Arc<Sandbox> = req.sandbox.clone();
    let key = req.key();
    let ns = req.ns().to_string();
    let uid = pod.pointer("/metadata/uid").cloned();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    // Follow: a new line every second, ending when the pod is deleted (or replaced) or the
    // client goes away.
    tokio::spawn(async move {
        if tx.send(Bytes::from(history)).await.is_err() {
            return;
        }
        let mut i = HISTORY_LINES;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
            let alive = sandbox
                .store
                .get(&key, &ns, &pod_name)
                .is_some_and(|p| p.pointer("/metadata/uid").cloned() == uid);
            if !alive {
                return;
            }
            let line = log_line(
                &pod_name,
                &container,
                i,
                time::OffsetDateTime::now_utc(),
                timestamps,
            );
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
            i += 1;
        }
    });
    streaming_response("text/plain", rx)
}
