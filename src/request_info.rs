//! Naming a Kubernetes request the way the apiserver does (`RequestInfo`).
//!
//! A port of `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`, so that audit records and
//! access rules use the same verbs and resources as the cluster itself. Both hops parse the path:
//! the client to label its own records, the gateway to authorize and audit.

use serde::{Deserialize, Serialize};

/// What a request does, in the apiserver's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The path, for non-resource requests (`/version`, `/apis`).
    pub path: String,
    /// get, list, watch, create, update, patch, delete, deletecollection, proxy, or the lowercase
    /// HTTP method for non-resource requests.
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

const API_PREFIXES: [&str; 2] = ["api", "apis"];
const GROUPLESS_PREFIX: &str = "api";
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Parses an HTTP method and a path with its (still encoded) query string.
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
        let mut info = RequestInfo {
            is_resource_request: false,
            path: path.to_string(),
            verb: method.to_ascii_lowercase(),
            ..Default::default()
        };

        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !API_PREFIXES.contains(&parts[0]) {
            return info;
        }
        info.api_prefix = parts[0].to_string();
        parts.remove(0);

        if info.api_prefix != GROUPLESS_PREFIX {
            // A group needs a version and at least one more part to be a resource request.
            if parts.len() < 3 {
                return info;
            }
            info.api_group = parts[0].to_string();
            parts.remove(0);
        }
        info.is_resource_request = true;
        info.api_version = parts[0].to_string();
        parts.remove(0);

        // Legacy verbs in the path (`/api/v1/watch/...`, `/api/v1/proxy/...`).
        if matches!(parts.first(), Some(&"watch") | Some(&"proxy")) {
            info.verb = parts[0].to_string();
            parts.remove(0);
        } else {
            info.verb = match method.to_ascii_uppercase().as_str() {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }

        if parts.first() == Some(&"namespaces") {
            if parts.len() > 1 {
                info.namespace = parts[1].to_string();
                // `/namespaces/foo` is the namespace object itself; `/namespaces/foo/status` too.
                if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                    parts.drain(..2);
                }
            }
        } else {
            info.namespace = String::new();
        }

        match parts.len() {
            0 => {}
            1 => info.resource = parts[0].to_string(),
            2 => {
                info.resource = parts[0].to_string();
                info.name = parts[1].to_string();
            }
            _ => {
                info.resource = parts[0].to_string();
                info.name = parts[1].to_string();
                info.subresource = parts[2].to_string();
            }
        }

        let params = QueryParams(query.unwrap_or(""));
        if info.name.is_empty() && info.verb == "get" {
            info.verb = match params.get("watch") {
                Some(v) if v != "false" && v != "0" => "watch",
                _ => "list",
            }
            .to_string();
        }
        // `fieldSelector=metadata.name=X` names one object (list/watch of a single object).
        if info.verb == "list" || info.verb == "watch" {
            if let Some(selector) = params.get("fieldSelector") {
                if let Some(name) = selector.strip_prefix("metadata.name=") {
                    if !name.contains(',') {
                        info.name = name.to_string();
                    }
                }
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }

    /// `pods`, or `pods/exec` when a subresource is addressed.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// A borrowed query string with decoding lookups.
pub struct QueryParams<'a>(pub &'a str);

impl QueryParams<'_> {
    /// The first value of `key`, percent- and plus-decoded (like Go's `url.ParseQuery`).
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == key).then(|| decode(v))
        })
    }
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path?query, verb, group, version, namespace, resource, subresource, name)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    const CASES: &[Case] = &[
        // non-resource requests: verb is the lowercase method
        ("GET", "/", "get", "", "", "", "", "", ""),
        ("GET", "/api", "get", "", "", "", "", "", ""),
        ("GET", "/api/v1", "get", "", "", "", "", "", ""),
        ("GET", "/apis", "get", "", "", "", "", "", ""),
        ("GET", "/apis/apps", "get", "", "", "", "", "", ""),
        ("GET", "/apis/apps/v1", "get", "", "", "", "", "", ""),
        ("GET", "/version?timeout=5s", "get", "", "", "", "", "", ""),
        ("POST", "/healthz", "post", "", "", "", "", "", ""),
        (
            "GET",
            "/openapi/v3/apis/apps/v1",
            "get",
            "",
            "",
            "",
            "",
            "",
            "",
        ),
        // resource requests
        ("GET", "/api/v1/pods", "list", "", "v1", "", "pods", "", ""),
        (
            "GET",
            "/api/v1/namespaces/ns/pods",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods/p",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        (
            "HEAD",
            "/api/v1/namespaces/ns/pods/p",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/pods",
            "create",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "PUT",
            "/api/v1/namespaces/ns/pods/p",
            "update",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d",
            "patch",
            "apps",
            "v1",
            "ns",
            "deployments",
            "",
            "d",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods/p",
            "delete",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods",
            "deletecollection",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "OPTIONS",
            "/api/v1/namespaces/ns/pods",
            "",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        // watch: legacy path and query parameter
        (
            "GET",
            "/api/v1/watch/namespaces/ns/pods",
            "watch",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?resourceVersion=1&watch=true",
            "watch",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?watch=1",
            "watch",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?watch=false",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?watch=0",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/pods?watch=yes",
            "watch",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
        ),
        // a watch on a named object keeps verb get (the name is set)
        (
            "GET",
            "/api/v1/namespaces/ns/pods/p?watch=true",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        // fieldSelector names the object but keeps list/watch
        (
            "GET",
            "/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dweb",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "web",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dweb&watch=true",
            "watch",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "web",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?fieldSelector=status.phase%3DRunning",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
        // subresources
        (
            "GET",
            "/api/v1/namespaces/ns/pods/p/log?follow=true",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "log",
            "p",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods/p/exec?command=sh",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "exec",
            "p",
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/pods/p/exec?command=sh",
            "create",
            "",
            "v1",
            "ns",
            "pods",
            "exec",
            "p",
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/pods/p/portforward",
            "create",
            "",
            "v1",
            "ns",
            "pods",
            "portforward",
            "p",
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            "update",
            "apps",
            "v1",
            "ns",
            "deployments",
            "scale",
            "d",
        ),
        // parts beyond the subresource are ignored
        (
            "GET",
            "/api/v1/namespaces/ns/pods/p/proxy/some/path",
            "get",
            "",
            "v1",
            "ns",
            "pods",
            "proxy",
            "p",
        ),
        // legacy proxy verb
        (
            "GET",
            "/api/v1/proxy/namespaces/ns/pods/p",
            "proxy",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "p",
        ),
        // namespaces themselves
        (
            "GET",
            "/api/v1/namespaces",
            "list",
            "",
            "v1",
            "",
            "namespaces",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/foo",
            "get",
            "",
            "v1",
            "foo",
            "namespaces",
            "",
            "foo",
        ),
        (
            "PUT",
            "/api/v1/namespaces/foo/status",
            "update",
            "",
            "v1",
            "foo",
            "namespaces",
            "status",
            "foo",
        ),
        (
            "PUT",
            "/api/v1/namespaces/foo/finalize",
            "update",
            "",
            "v1",
            "foo",
            "namespaces",
            "finalize",
            "foo",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/foo",
            "delete",
            "",
            "v1",
            "foo",
            "namespaces",
            "",
            "foo",
        ),
        // cluster-scoped and grouped
        (
            "GET",
            "/api/v1/nodes/n1",
            "get",
            "",
            "v1",
            "",
            "nodes",
            "",
            "n1",
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "list",
            "rbac.authorization.k8s.io",
            "v1",
            "",
            "clusterroles",
            "",
            "",
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            "list",
            "apps",
            "v1",
            "",
            "deployments",
            "",
            "",
        ),
        // trailing slash and double parts
        (
            "GET",
            "/api/v1/namespaces/ns/pods/",
            "list",
            "",
            "v1",
            "ns",
            "pods",
            "",
            "",
        ),
    ];

    #[test]
    fn follows_the_apiserver_rules() {
        for &(method, target, verb, group, version, ns, resource, sub, name) in CASES {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            let info = RequestInfo::parse(method, path, query);
            let got = (
                info.verb.as_str(),
                info.api_group.as_str(),
                info.api_version.as_str(),
                info.namespace.as_str(),
                info.resource.as_str(),
                info.subresource.as_str(),
                info.name.as_str(),
            );
            assert_eq!(
                got,
                (verb, group, version, ns, resource, sub, name),
                "{method} {target}"
            );
            let expect_resource = !resource.is_empty() || !version.is_empty();
            assert_eq!(
                info.is_resource_request, expect_resource,
                "{method} {target}"
            );
        }
    }

    #[test]
    fn query_params_decode_like_go() {
        let q = QueryParams("a=1&labelSelector=app+in+%28web%29&flag");
        assert_eq!(q.get("labelSelector").as_deref(), Some("app in (web)"));
        assert_eq!(q.get("flag").as_deref(), Some(""));
        assert_eq!(q.get("missing"), None);
    }
}
