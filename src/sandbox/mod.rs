//! The sandbox cluster: an in-process emulation of a Kubernetes API server that the real
//! `kubectl` (1.27 to 1.33) works against, for the product demo and the integration tests.
//!
//! It is a real little object store, not canned answers: discovery and OpenAPI are derived from
//! the embedded discovery documents of a real cluster, every resource listed there can be
//! created, read, listed, watched, patched and deleted, and a few controllers (deployments,
//! replicasets, the "kubelet", namespace deletion) keep objects plausible.
//!
//! Beyond CRUD: server-side apply with `managedFields` and conflicts (`managed.rs`), ephemeral
//! containers and interactive attach for `kubectl debug` (`ephemeral.rs`, `exec.rs`), and the
//! `metrics.k8s.io` API of metrics-server for `kubectl top` (`metrics.rs`).
//!
//! # Seeded objects
//!
//! A new sandbox holds (all names are stable across runs: generated pod names derive from a
//! hash of the pod template, and the `seeded_names_are_stable` test pins them):
//!
//! - Namespaces `default`, `kube-system`, `dev`, `prod`.
//! - Node `sandbox-node-1` (Ready, control-plane, v1.32.0, InternalIP 10.0.0.10).
//! - `default`: service `kubernetes` (10.96.0.1:443).
//! - `kube-system`: static pods `etcd-sandbox-node-1`, `kube-apiserver-sandbox-node-1`,
//!   `kube-controller-manager-sandbox-node-1`, `kube-scheduler-sandbox-node-1`; deployment
//!   `coredns` (2 replicas: pods `coredns-rtrhj4z7hh-dtvkx`, `coredns-rtrhj4z7hh-n9xg5`);
//!   service `kube-dns`.
//! - `dev` and `prod`, each: deployment `web` (`nginx:1.25.3`, port 80, labels
//!   `app=web,tier=frontend`) and deployment `api` (`ghcr.io/acme/api:1.4.2`, port 8080, labels
//!   `app=api,tier=backend`), with their replicasets and running pods; services `web` (port 80;
//!   ClusterIP in dev, LoadBalancer 203.0.113.10 in prod) and `api` (port 8080); configmap
//!   `app-config` (keys `LOG_LEVEL`, `FEATURE_FLAGS`, `app.properties`); secret
//!   `db-credentials` (Opaque, `username` = `app_<ns>`, `password` = `s3cr3t-<ns>-pw`).
//! - `dev` pods: `web-f4xbb9mvgl-fh794`, `web-f4xbb9mvgl-pv968`, `api-nv7cnnlg94-qpf5n`, and
//!   `debug-shell` (`busybox:1.36`, label `run=debug-shell`).
//! - `prod` pods: `web-ssrv5mr5dd-5cwlc`, `web-ssrv5mr5dd-p74dm`, `web-ssrv5mr5dd-swsp7`,
//!   `api-jgnwr8w8sm-bkg8b` (3 restarts, last one OOMKilled), `api-jgnwr8w8sm-lxj5g`.
//!
//! Every pod is Running on `sandbox-node-1` with a pod IP in 10.244.0.0/16; its log
//! (`kubectl logs`) is a deterministic list of lines naming the pod and container.

mod api;
mod controller;
pub mod discovery;
mod ephemeral;
mod exec;
mod managed;
mod metrics;
mod openapi_schema;
mod patch;
mod proto;
mod seed;
mod selector;
pub mod server;
mod spdy;
mod store;
mod stream;
mod table;

#[cfg(test)]
mod kubectl_tests;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};

use discovery::{Discovery, ResourceInfo, AGGREGATED_V2_CONTENT_TYPE};
use store::{Store, StoreError};

/// Largest request body accepted (the apiserver's limit is 3 MiB for most objects).
const MAX_BODY: usize = 8 * 1024 * 1024;

pub const GIT_VERSION: &str = "v1.32.0-ztk-sandbox";

/// An in-memory Kubernetes API server. Cheap to create; every instance has its own objects.
pub struct Sandbox {
    token: String,
    discovery: Discovery,
    store: Store,
    /// The pods' fake filesystems, for exec and cp.
    files: exec::Filesystems,
    /// Requests answered (all but `SERVED_PATH` itself), so load tests can compare the audit
    /// trail with what the cluster really served.
    served: std::sync::atomic::AtomicU64,
}

/// `GET`: `{"served": N}`, the number of requests this sandbox has answered (authenticated).
pub const SERVED_PATH: &str = "/ztk-sandbox/served";

impl Sandbox {
    /// `token`: the bearer token every request must carry (`Authorization: Bearer <token>`);
    /// requests without it get a k8s Status 401.
    pub fn new(token: String) -> Arc<Sandbox> {
        let store = Store::new();
        seed::seed(&store);
        Arc::new(Sandbox {
            token,
            discovery: Discovery::load(),
            store,
            files: exec::Filesystems::default(),
            served: Default::default(),
        })
    }

    pub async fn handle(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        use std::sync::atomic::Ordering;
        if req.uri().path() == SERVED_PATH {
            if !self.authorized(req.headers()) {
                return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
            }
            let served = self.served.load(Ordering::SeqCst);
            return body::json_response(StatusCode::OK, &json!({ "served": served }));
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        if exec::is_exec(&req) {
            if !self.authorized(req.headers()) {
                return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
            }
            return exec::serve(self.clone(), req);
        }
        let (parts, body) = req.into_parts();
        // Always drain the body, whatever the answer: an unread body (kubectl's DELETE sends
        // one) would corrupt the next request on an HTTP/1.1 connection.
        let body = match body::read_limited(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    "the request body is too large or could not be read",
                )
            }
        };
        if !self.authorized(&parts.headers) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        let resp = self.route(&parts, body);
        if parts.method == Method::HEAD {
            let (p, _) = resp.into_parts();
            return Response::from_parts(p, body::empty());
        }
        resp
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Constant-time comparison: the token is the only secret here.
        let (a, b) = (given.trim().as_bytes(), self.token.as_bytes());
        !b.is_empty()
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn route(self: &Arc<Self>, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
        let path = parts.uri.path();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let query = parse_query(parts.uri.query());
        let is_read = parts.method == Method::GET || parts.method == Method::HEAD;
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");

        let read_only = |resp: Response<Body>| {
            if is_read {
                resp
            } else {
                method_not_allowed(&parts.method)
            }
        };

        match segs.as_slice() {
            ["version"] => read_only(json_ok(&json!({
                "major": "1",
                "minor": "32",
                "gitVersion": GIT_VERSION,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23.4",
                "compiler": "gc",
                "platform": "linux/amd64",
            }))),
            ["healthz" | "livez" | "readyz", ..] => read_only(text_ok("ok")),
            ["api"] => read_only(if wants_aggregated(accept) {
                aggregated_response(&self.discovery.aggregated(true))
            } else {
                json_ok(&self.discovery.api_versions(host_of(parts)))
            }),
            ["apis"] => read_only(if wants_aggregated(accept) {
                aggregated_response(&self.discovery.aggregated(false))
            } else {
                json_ok(&self.discovery.api_group_list())
            }),
            ["api", v] => read_only(match self.discovery.resource_list(v) {
                Some(list) => json_ok(list),
                None => not_found_path(),
            }),
            ["apis", g] => read_only(match self.discovery.api_group(g) {
                Some(group) => json_ok(&group),
                None => not_found_path(),
            }),
            ["apis", g, v] => read_only(match self.discovery.resource_list(&format!("{g}/{v}")) {
                Some(list) => json_ok(list),
                None => not_found_path(),
            }),
            ["openapi", "v3"] => read_only(json_ok(self.discovery.openapi_root())),
            ["openapi", "v3", rest @ ..] => {
                read_only(match self.discovery.openapi_doc(&rest.join("/")) {
                    Some(doc) => json_ok(doc),
                    None => not_found_path(),
                })
            }
            ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => {
                read_only(if accept.contains("protobuf") {
                    let mut resp = Response::new(body::full(discovery::openapi_v2_protobuf()));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(discovery::OPENAPI_V2_PROTOBUF),
                    );
                    resp
                } else {
                    json_ok(
                        &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": {}}),
                    )
                })
            }
            ["api", v, rest @ ..] => {
                self.resource_request(parts, &query, accept, "", v, rest, body)
            }
            ["apis", g, v, rest @ ..] => {
                self.resource_request(parts, &query, accept, g, v, rest, body)
            }
            _ => not_found_path(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn resource_request(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        query: &HashMap<String, String>,
        accept: &str,
        group: &str,
        version: &str,
        rest: &[&str],
        body: Bytes,
    ) -> Response<Body> {
        let mut rest = rest;
        let legacy_watch = rest.first() == Some(&"watch");
        if legacy_watch {
            rest = &rest[1..];
        }
        let mut namespace: Option<&str> = None;
        if rest.len() >= 3
            && rest[0] == "namespaces"
            && rest[2] != "status"
            && rest[2] != "finalize"
        {
            namespace = Some(rest[1]);
            rest = &rest[2..];
        }
        let (resource, name, sub) = match rest {
            [r] => (*r, None, None),
            [r, n] => (*r, Some(*n), None),
            [r, n, s] => (*r, Some(*n), Some(*s)),
            _ => return not_found_path(),
        };
        let Some(res) = self.discovery.find(group, version, resource) else {
            return not_found_path();
        };
        // A namespaced resource needs its namespace to name one object; a cluster-scoped one
        // has no namespace at all.
        if (res.namespaced && name.is_some() && namespace.is_none())
            || (!res.namespaced && namespace.is_some())
        {
            return not_found_path();
        }
        if let Some(sub) = sub {
            if !res.subresources.iter().any(|s| s.name == sub) {
                return not_found_path();
            }
        }
        let req = api::Req {
            sandbox: self,
            res,
            namespace,
            name,
            sub,
            query,
            accept,
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            body,
            impersonated: impersonated(&parts.headers),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        };
        if res.group == metrics::GROUP {
            if legacy_watch {
                return method_not_allowed(&parts.method);
            }
            return metrics::handle(&req, &parts.method);
        }
        let watch = legacy_watch
            || query
                .get("watch")
                .is_some_and(|w| crate::request_info::go_bool(w));
        match (&parts.method, name, sub) {
            (&Method::GET | &Method::HEAD, None, None) if watch => stream::watch(&req),
            (&Method::GET | &Method::HEAD, Some(name), None) if legacy_watch => {
                stream::watch_one(&req, name)
            }
            (&Method::GET | &Method::HEAD, None, None) => api::list(&req),
            (&Method::GET | &Method::HEAD, Some(_), Some("log")) if res.kind == "Pod" => {
                stream::logs(&req)
            }
            (
                &Method::GET | &Method::HEAD,
                Some(_),
                None | Some("status" | "ephemeralcontainers"),
            ) => api::get(&req),
            (&Method::GET | &Method::HEAD, Some(_), Some("scale")) => api::get_scale(&req),
            (&Method::POST, None, None) => api::create(&req),
            (&Method::PUT, Some(_), None | Some("status" | "ephemeralcontainers")) => {
                api::update(&req)
            }
            (&Method::PUT, Some(_), Some("scale")) => api::update_scale(&req, false),
            (&Method::PATCH, Some(_), None | Some("status" | "ephemeralcontainers")) => {
                api::patch(&req)
            }
            (&Method::PATCH, Some(_), Some("scale")) => api::update_scale(&req, true),
            (&Method::DELETE, Some(_), None) => api::delete(&req),
            (&Method::DELETE, None, None) => api::delete_collection(&req),
            (_, Some(_), Some("exec" | "attach" | "portforward")) => status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "exec, attach and port-forward need an upgrade to WebSocket or SPDY/3.1",
            ),
            (_, Some(_), Some("proxy")) => status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the sandbox cluster runs no containers: proxy is not supported",
            ),
            (m, _, _) => method_not_allowed(m),
        }
    }
}

/// Query parameters, percent-decoded (`+` is a space, as Go's `url.Values` encodes it). A
/// repeated parameter keeps its first value, as the apiserver's `url.Values.Get` reads it.
fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .fold(HashMap::new(), |mut params, (k, v)| {
            params.entry(k).or_insert(v);
            params
        })
}

fn host_of(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("127.0.0.1:6443")
}

/// The media-type parameters of each alternative in an Accept header.
fn accept_alternatives(accept: &str) -> impl Iterator<Item = HashMap<&str, &str>> {
    accept.split(',').map(|alt| {
        alt.split(';')
            .skip(1)
            .filter_map(|p| p.trim().split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect()
    })
}

/// kubectl asks for `apidiscovery.k8s.io/v2` aggregated discovery first; older clients ask for
/// `v2beta1` only and get the plain documents instead.
fn wants_aggregated(accept: &str) -> bool {
    accept_alternatives(accept).any(|p| {
        p.get("g") == Some(&"apidiscovery.k8s.io")
            && p.get("v") == Some(&"v2")
            && p.get("as") == Some(&"APIGroupDiscoveryList")
    })
}

fn wants_table(accept: &str) -> bool {
    accept_alternatives(accept)
        .any(|p| p.get("g") == Some(&"meta.k8s.io") && p.get("as") == Some(&"Table"))
}

fn aggregated_response(v: &Value) -> Response<Body> {
    let mut resp = json_ok(v);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(AGGREGATED_V2_CONTENT_TYPE),
    );
    resp
}

fn json_ok(v: &Value) -> Response<Body> {
    body::json_response(StatusCode::OK, v)
}

fn text_ok(text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    body::status_response(code, reason, message)
}

fn status_with_details(
    code: StatusCode,
    reason: &str,
    message: &str,
    res: &ResourceInfo,
    name: &str,
) -> Response<Body> {
    let mut v = body::status_value(code, reason, message);
    v["details"] = json!({"name": name, "group": res.group, "kind": res.name});
    body::json_response(code, &v)
}

/// The apiserver's 422 for field errors (each `field: Type: detail`): the joined message, and
/// one cause per error, from which kubectl prints them.
fn invalid(res: &ResourceInfo, name: &str, errs: &[String]) -> Response<Body> {
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| {
            let (field, body) = e.split_once(": ").unwrap_or(("", e));
            let reason = match body.split(':').next().unwrap_or("") {
                "Required value" => "FieldValueRequired",
                "Duplicate value" => "FieldValueDuplicate",
                "Not found" => "FieldValueNotFound",
                "Forbidden" => "FieldValueForbidden",
                "Unsupported value" => "FieldValueNotSupported",
                _ => "FieldValueInvalid",
            };
            json!({"reason": reason, "message": body, "field": field})
        })
        .collect();
    let joined = match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let code = StatusCode::UNPROCESSABLE_ENTITY;
    let mut v = body::status_value(
        code,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {joined}", res.kind),
    );
    v["details"] = json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes});
    body::json_response(code, &v)
}

fn not_found_path() -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn method_not_allowed(method: &Method) -> Response<Body> {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("the server does not allow this method on the requested resource ({method})"),
    )
}

fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The apiserver's answer for a store error on object `name` of `res`.
fn store_error(err: StoreError, res: &ResourceInfo, name: &str) -> Response<Body> {
    let q = res.qualified();
    match err {
        StoreError::NotFound => status_with_details(StatusCode::NOT_FOUND, "NotFound", &format!("{q} \"{name}\" not found"), res, name),
        StoreError::AlreadyExists => {
            status_with_details(StatusCode::CONFLICT, "AlreadyExists", &format!("{q} \"{name}\" already exists"), res, name)
        }
        StoreError::Conflict => status_with_details(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("Operation cannot be fulfilled on {q} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
            res,
            name,
        ),
        StoreError::Invalid(msg) => status_with_details(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("{} \"{name}\" is invalid: {msg}", res.kind),
            res,
            name,
        ),
    }
}

/// The user and groups named by `Impersonate-User`/`Impersonate-Group`, which `kubectl auth
/// whoami` then shows (the sandbox's one credential may impersonate anyone, like a
/// cluster-admin). Lets tests see exactly what the gateway sent.
fn impersonated(headers: &HeaderMap) -> Option<(String, Vec<String>)> {
    let user = headers.get("impersonate-user")?.to_str().ok()?.to_string();
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const TOKEN: &str = "t0ken";

    async fn call(
        sb: &Arc<Sandbox>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body::full(body.to_string())).unwrap();
        let resp = sb.handle(req).await;
        let (parts, b) = resp.into_parts();
        (
            parts.status,
            parts.headers,
            b.collect().await.unwrap().to_bytes(),
        )
    }

    async fn call_json(
        sb: &Arc<Sandbox>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let (code, _, b) = call(sb, method, path, headers, body).await;
        (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn auth_and_basics() {
        let sb = Sandbox::new(TOKEN.into());
        let req = Request::builder()
            .uri("/version")
            .body(body::empty())
            .unwrap();
        let resp = sb.handle(req).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let (code, v) = call_json(&sb, "GET", "/version", &[], "").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["gitVersion"], GIT_VERSION);
        let (code, _, b) = call(&sb, "GET", "/readyz", &[], "").await;
        assert_eq!((code, &b[..]), (StatusCode::OK, &b"ok"[..]));
        let (code, v) = call_json(&sb, "GET", "/nope", &[], "").await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotFound"))
        );
        let (code, _) = call_json(&sb, "POST", "/version", &[], "").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let (code, _) = call_json(&sb, "PUT", "/api/v1/namespaces/dev/pods", &[], "{}").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn sandbox_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Sandbox>();
    }

    #[tokio::test]
    async fn watch_with_initial_events_ends_them_with_a_bookmark() {
        let sb = Sandbox::new(TOKEN.into());
        let req = Request::builder()
            .uri("/api/v1/namespaces/dev/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body::empty())
            .unwrap();
        let mut body = sb.handle(req).await.into_body();
        let mut lines: Vec<Value> = Vec::new();
        while lines.last().is_none_or(|l| l["type"] != "BOOKMARK") {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                lines.extend(
                    data.split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| serde_json::from_slice::<Value>(l).unwrap()),
                );
            }
        }
        assert_eq!(lines.len(), 2, "app-config, then the bookmark");
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(
            lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }

    #[tokio::test]
    async fn seeded_names_are_stable() {
        let sb = Sandbox::new(TOKEN.into());
        let (_, v) = call_json(&sb, "GET", "/api/v1/pods", &[], "").await;
        let names: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        // Keep the module documentation in step with this list.
        assert_eq!(
            names,
            [
                "dev/api-nv7cnnlg94-qpf5n",
                "dev/debug-shell",
                "dev/web-f4xbb9mvgl-fh794",
                "dev/web-f4xbb9mvgl-pv968",
                "kube-system/coredns-rtrhj4z7hh-dtvkx",
                "kube-system/coredns-rtrhj4z7hh-n9xg5",
                "kube-system/etcd-sandbox-node-1",
                "kube-system/kube-apiserver-sandbox-node-1",
                "kube-system/kube-controller-manager-sandbox-node-1",
                "kube-system/kube-scheduler-sandbox-node-1",
                "prod/api-jgnwr8w8sm-bkg8b",
                "prod/api-jgnwr8w8sm-lxj5g",
                "prod/web-ssrv5mr5dd-5cwlc",
                "prod/web-ssrv5mr5dd-p74dm",
                "prod/web-ssrv5mr5dd-swsp7",
            ]
        );
        let (_, v) = call_json(
            &sb,
            "GET",
            "/api/v1/namespaces/prod/pods/api-jgnwr8w8sm-bkg8b",
            &[],
            "",
        )
        .await;
        assert_eq!(v["status"]["containerStatuses"][0]["restartCount"], 3);
        let (_, v) = call_json(&sb, "GET", "/api/v1/namespaces", &[], "").await;
        let ns: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["default", "dev", "kube-system", "prod"]);
    }

    #[tokio::test]
    async fn discovery_negotiation() {
        let sb = Sandbox::new(TOKEN.into());
        let agg = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let (_, h, b) = call(&sb, "GET", "/apis", &[("accept", agg)], "").await;
        assert_eq!(h[header::CONTENT_TYPE], AGGREGATED_V2_CONTENT_TYPE);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let (_, v) = call_json(&sb, "GET", "/apis", &[("accept", old)], "").await;
        assert_eq!(v["kind"], "APIGroupList");
        let (_, v) = call_json(&sb, "GET", "/api", &[], "").await;
        assert_eq!(v["kind"], "APIVersions");
        let (_, v) = call_json(&sb, "GET", "/apis/apps/v1", &[], "").await;
        assert_eq!(v["groupVersion"], "apps/v1");
        let (code, v) = call_json(&sb, "GET", "/openapi/v2", &[], "").await;
        assert_eq!((code, v["swagger"].as_str()), (StatusCode::OK, Some("2.0")));
        let (_, h, b) = call(
            &sb,
            "GET",
            "/openapi/v2",
            &[("accept", discovery::OPENAPI_V2_PROTOBUF)],
            "",
        )
        .await;
        assert_eq!(h[header::CONTENT_TYPE], discovery::OPENAPI_V2_PROTOBUF);
        assert_eq!(&b[..5], b"\x0a\x032.0");
        let (_, v) = call_json(&sb, "GET", "/openapi/v3", &[], "").await;
        let url = v["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_string();
        let (code, v) = call_json(&sb, "GET", &url, &[], "").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["openapi"], "3.0.0");
    }

    #[tokio::test]
    async fn crud_and_errors() {
        let sb = Sandbox::new(TOKEN.into());
        let (code, v) =
            call_json(&sb, "GET", "/api/v1/pods?labelSelector=app%3Dweb", &[], "").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["items"].as_array().unwrap().len(), 5);
        assert!(v["metadata"]["resourceVersion"].is_string());

        let (code, v) = call_json(&sb, "GET", "/api/v1/namespaces/dev/pods/nope", &[], "").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(v["message"], "pods \"nope\" not found");
        let (code, v) = call_json(
            &sb,
            "GET",
            "/apis/apps/v1/namespaces/dev/deployments/nope",
            &[],
            "",
        )
        .await;
        assert_eq!(
            (code, v["message"].as_str()),
            (
                StatusCode::NOT_FOUND,
                Some("deployments.apps \"nope\" not found")
            )
        );

        let cm =
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"1"}}"#;
        let (code, v) = call_json(&sb, "POST", "/api/v1/namespaces/dev/configmaps", &[], cm).await;
        assert_eq!(code, StatusCode::CREATED);
        assert_eq!(v["metadata"]["namespace"], "dev");
        let (code, v) = call_json(&sb, "POST", "/api/v1/namespaces/dev/configmaps", &[], cm).await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (StatusCode::CONFLICT, Some("AlreadyExists"))
        );
        let (code, v) = call_json(&sb, "POST", "/api/v1/namespaces/nons/configmaps", &[], cm).await;
        assert_eq!(
            (code, v["message"].as_str()),
            (StatusCode::NOT_FOUND, Some("namespaces \"nons\" not found"))
        );
        let (code, v) = call_json(
            &sb,
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            &[],
            "{not json",
        )
        .await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BadRequest"))
        );

        let (code, v) = call_json(
            &sb,
            "PATCH",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[("content-type", "application/merge-patch+json")],
            r#"{"data":{"b":"2"}}"#,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["data"], json!({"a": "1", "b": "2"}));
        let (code, v) = call_json(
            &sb,
            "PATCH",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[("content-type", "application/json-patch+json")],
            r#"[{"op":"remove","path":"/data/a"}]"#,
        )
        .await;
        assert_eq!(
            (code, v["data"].clone()),
            (StatusCode::OK, json!({"b": "2"}))
        );

        let mut updated = v.clone();
        updated["data"]["c"] = json!("3");
        let (code, v) = call_json(
            &sb,
            "PUT",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[],
            &updated.to_string(),
        )
        .await;
        assert_eq!((code, v["data"]["c"].as_str()), (StatusCode::OK, Some("3")));
        let (code, _) = call_json(
            &sb,
            "PUT",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[],
            &updated.to_string(),
        )
        .await;
        assert_eq!(code, StatusCode::CONFLICT, "stale resourceVersion");

        let (code, _) = call_json(
            &sb,
            "DELETE",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[],
            r#"{"propagationPolicy":"Background"}"#,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let (code, _) = call_json(
            &sb,
            "DELETE",
            "/api/v1/namespaces/dev/configmaps/c1",
            &[],
            "",
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);

        let (code, v) = call_json(
            &sb,
            "GET",
            "/api/v1/pods?fieldSelector=metadata.namespace%3Dkube-system",
            &[],
            "",
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert!(v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["namespace"] == "kube-system"));
        let (code, _) = call_json(&sb, "GET", "/api/v1/pods?labelSelector=a+in+(b", &[], "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn tables_and_scale() {
        let sb = Sandbox::new(TOKEN.into());
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let (_, v) = call_json(
            &sb,
            "GET",
            "/api/v1/namespaces/prod/pods",
            &[("accept", accept)],
            "",
        )
        .await;
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["rows"].as_array().unwrap().len(), 5);
        let (_, v) = call_json(
            &sb,
            "GET",
            "/api/v1/namespaces/dev/pods/debug-shell?includeObject=Object",
            &[("accept", accept)],
            "",
        )
        .await;
        assert_eq!(v["rows"][0]["object"]["kind"], "Pod");

        let (code, v) = call_json(
            &sb,
            "PATCH",
            "/apis/apps/v1/namespaces/dev/deployments/web/scale",
            &[("content-type", "application/merge-patch+json")],
            r#"{"spec":{"replicas":4}}"#,
        )
        .await;
        assert_eq!((code, v["kind"].as_str()), (StatusCode::OK, Some("Scale")));
        let (_, v) = call_json(
            &sb,
            "GET",
            "/apis/apps/v1/namespaces/dev/deployments/web",
            &[],
            "",
        )
        .await;
        assert_eq!(v["status"]["readyReplicas"], 4);
        let (_, v) = call_json(
            &sb,
            "GET",
            "/api/v1/namespaces/dev/pods?labelSelector=app%3Dweb",
            &[],
            "",
        )
        .await;
        assert_eq!(v["items"].as_array().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn logs() {
        let sb = Sandbox::new(TOKEN.into());
        let (code, _, b) = call(
            &sb,
            "GET",
            "/api/v1/namespaces/dev/pods/debug-shell/log?tailLines=3",
            &[],
            "",
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let text = String::from_utf8(b.to_vec()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("debug-shell"));
        let (code, _, _) = call(&sb, "GET", "/api/v1/namespaces/dev/pods/nope/log", &[], "").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _, _) = call(
            &sb,
            "GET",
            "/api/v1/namespaces/dev/pods/debug-shell/log?container=x",
            &[],
            "",
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn ephemeral_containers_subresource() {
        let sb = Sandbox::new(TOKEN.into());
        let url = "/api/v1/namespaces/dev/pods/debug-shell/ephemeralcontainers";
        let (code, v) = call_json(&sb, "GET", url, &[], "").await;
        assert_eq!((code, v["kind"].as_str()), (StatusCode::OK, Some("Pod")));
        let (code, v) = call_json(
            &sb,
            "PATCH",
            url,
            &[("content-type", "application/strategic-merge-patch+json")],
            r#"{"spec":{"ephemeralContainers":[{"name":"dbg","image":"busybox","stdin":true}]},"metadata":{"labels":{"x":"y"}}}"#,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert!(
            v["metadata"]["labels"].get("x").is_none(),
            "only ephemeral containers change"
        );
        assert!(v["status"]["ephemeralContainerStatuses"][0]["state"]["running"].is_object());
        let (code, v) = call_json(
            &sb,
            "PATCH",
            url,
            &[("content-type", "application/json-patch+json")],
            r#"[{"op":"add","path":"/spec/ephemeralContainers/-","value":{"name":"two","image":"alpine"}}]"#,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(
            v["spec"]["ephemeralContainers"].as_array().unwrap().len(),
            2
        );
        let (code, v) = call_json(
            &sb,
            "PATCH",
            url,
            &[("content-type", "application/merge-patch+json")],
            r#"{"spec":{"ephemeralContainers":[{"name":"two","image":"alpine"}]}}"#,
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            v["details"]["causes"][0]["message"],
            "Forbidden: existing ephemeral containers \"dbg\" may not be removed\n"
        );
        let (_, mut pod) = call_json(&sb, "GET", url, &[], "").await;
        pod["spec"]["ephemeralContainers"][1]["image"] = json!("ubuntu");
        let (code, v) = call_json(&sb, "PUT", url, &[], &pod.to_string()).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("\"two\" may not be changed"));
        let (code, _) = call_json(&sb, "DELETE", url, &[], "").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn watch_streams_events() {
        let sb = Sandbox::new(TOKEN.into());
        let (_, list) = call_json(&sb, "GET", "/api/v1/namespaces/dev/configmaps", &[], "").await;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let req = Request::builder()
            .uri(format!("/api/v1/namespaces/dev/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body::empty())
            .unwrap();
        let resp = sb.handle(req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let cm = r#"{"metadata":{"name":"w1"}}"#;
        call_json(&sb, "POST", "/api/v1/namespaces/dev/configmaps", &[], cm).await;
        call_json(&sb, "POST", "/api/v1/namespaces/prod/configmaps", &[], cm).await;
        call_json(
            &sb,
            "DELETE",
            "/api/v1/namespaces/dev/configmaps/w1",
            &[],
            "",
        )
        .await;
        let mut lines = Vec::new();
        while lines.len() < 2 {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                for l in String::from_utf8(data.to_vec()).unwrap().lines() {
                    lines.push(serde_json::from_str::<Value>(l).unwrap());
                }
            }
        }
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[0]["object"]["metadata"]["name"], "w1");
        assert_eq!(lines[1]["type"], "DELETED");
    }
}
