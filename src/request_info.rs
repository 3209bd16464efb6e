//! Naming a Kubernetes request the way the apiserver does (`RequestInfo`).
//!
//! A port of `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`, so that audit records and
//! access rules use the same verbs and resources as the cluster itself. Both hops parse the path:
//! the client to label its own records, the gateway to authorize and audit.

use std::borrow::Cow;

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
            info.verb = if params.get("watch").is_some_and(|v| go_bool(&v)) {
                "watch"
            } else {
                "list"
            }
            .to_string();
            // `fieldSelector=metadata.name=X` names one object (list/watch of a single object).
            if let Some(name) = params
                .get("fieldSelector")
                .and_then(|s| exact_name(&s).map(str::to_string))
            {
                info.name = name;
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

/// A query parameter read as a boolean the way the apiserver converts one
/// (`runtime.Convert_Slice_string_To_bool`): `0` and `false` (any case) are false, anything
/// else, the empty value included (`?watch`, `?watch=`), is true.
pub fn go_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// The object a field selector limits a list or watch to: the value of its first
/// `metadata.name=X` (or `==`) term, as the apiserver's `RequiresExactMatch` finds it. Terms are
/// ANDed, so whatever else the selector says, it selects at most that object. A term with
/// escapes, spaces or a value that is no valid name gives no name: the request is then
/// authorized as a list of every object, which needs more, never less.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        let valid = !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains(['/', '%', '\\', ' ', '=', '!']);
        valid.then_some(value)
    })
}

/// Query parameters the apiserver reads as lists: they may repeat. Any other parameter given
/// twice is refused, since the gateway and the cluster could read different values of it.
const LIST_PARAMETERS: [&str; 4] = ["command", "ports", "exclude", "dryRun"];

/// Query parameters that decide how a request is named or whether it streams; they are
/// forwarded as `true` or `false`, whatever spelling the client used.
const BOOLEAN_PARAMETERS: [&str; 2] = ["watch", "follow"];

/// Why a request was refused before authorization: the gateway and the cluster could read it
/// differently, so the gateway would authorize one request and the cluster carry out another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("the path must start with '/'")]
    Relative,
    #[error("the path has a dot segment ({0:?}); send the path without '.' or '..' segments")]
    DotSegment(String),
    #[error("the path has an empty segment ('//'); send each segment once")]
    EmptySegment,
    #[error("the path has an encoded '/' (%2F) inside a segment")]
    EncodedSlash,
    #[error("the path has a ';'; Kubernetes paths have none")]
    Semicolon,
    #[error("the {0} has an invalid percent-encoding or is not UTF-8")]
    BadEncoding(&'static str),
    #[error("the {0} has a control character")]
    ControlCharacter(&'static str),
    #[error(
        "the query has a ';' (the apiserver drops such parameters); separate parameters with '&'"
    )]
    QuerySemicolon,
    #[error("the query parameter {0:?} is given more than once; give it once")]
    RepeatedParameter(String),
}

/// A request as the gateway authorizes it and forwards it: parsed once, so that what is
/// decided is exactly what goes to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub info: RequestInfo,
    /// The path, decoded once and encoded again: the form forwarded.
    pub path: String,
    /// The query, decoded once and encoded again, with `watch`/`follow` as `true`/`false`.
    pub query: Option<String>,
    /// Whether the response may stay open for long: a watch, followed logs, or the proxy
    /// subresource. Upgrades (exec, attach, port-forward) are seen from the headers.
    pub long_lived: bool,
}

impl ParsedRequest {
    /// Parses a request strictly: refuses what could be read two ways (dot or empty segments,
    /// encoded slashes, bad encodings, repeated parameters), and rebuilds path and query from
    /// the parsed values.
    pub fn parse(
        method: &str,
        raw_path: &str,
        raw_query: Option<&str>,
    ) -> Result<ParsedRequest, Ambiguity> {
        let path = canonical_path(raw_path)?;
        let (query, follow) = match raw_query {
            Some(q) => canonical_query(q)?,
            None => (None, false),
        };
        let info = RequestInfo::parse(method, &decoded_path(&path), query.as_deref());
        let long_lived = info.verb == "watch"
            || info.verb == "proxy"
            || info.subresource == "proxy"
            || (follow && info.subresource == "log");
        Ok(ParsedRequest {
            info,
            path,
            query,
            long_lived,
        })
    }

    /// `path?query`, as forwarded.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Characters encoded in a forwarded path segment: controls, space, and those with a meaning in
/// a URL (`%`, `?`, `#`, `/`), plus a few that are unsafe in paths.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Characters encoded in a forwarded query key or value (Go's `url.QueryEscape` set, but a
/// space is `%20`).
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes `s` once, refusing an invalid escape, text that is not UTF-8, a NUL, and (unless
/// `any_text`: a query value may hold an exec command's newline) any control character. Borrows
/// when there is nothing to decode.
fn strict_decode<'a>(
    s: &'a str,
    what: &'static str,
    any_text: bool,
) -> Result<Cow<'a, str>, Ambiguity> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'%') {
        let hex = bytes.get(i + at + 1..i + at + 3).unwrap_or(b"");
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(Ambiguity::BadEncoding(what));
        }
        i += at + 3;
    }
    let decoded = percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| Ambiguity::BadEncoding(what))?;
    let refused = |c: char| c == '\0' || (!any_text && c.is_control());
    if decoded.contains(refused) {
        return Err(Ambiguity::ControlCharacter(what));
    }
    Ok(decoded)
}

/// A query key or value decoded once: `+` is a space, as Go's `url.ParseQuery` reads it.
fn decode_form<'a>(
    s: &'a str,
    what: &'static str,
    any_text: bool,
) -> Result<Cow<'a, str>, Ambiguity> {
    if !s.contains('+') {
        return strict_decode(s, what, any_text);
    }
    let spaced = s.replace('+', " ");
    strict_decode(&spaced, what, any_text).map(|d| Cow::Owned(d.into_owned()))
}

fn canonical_path(raw: &str) -> Result<String, Ambiguity> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(Ambiguity::Relative);
    };
    let mut out = String::with_capacity(raw.len());
    let mut segments = rest.split('/').peekable();
    while let Some(raw_segment) = segments.next() {
        out.push('/');
        if raw_segment.is_empty() {
            // `/` itself, or a trailing slash, names the same thing for the apiserver; an inner
            // empty segment does not.
            if segments.peek().is_none() {
                break;
            }
            return Err(Ambiguity::EmptySegment);
        }
        let segment = strict_decode(raw_segment, "path", false)?;
        if segment.contains('/') {
            return Err(Ambiguity::EncodedSlash);
        }
        if segment.contains(';') {
            return Err(Ambiguity::Semicolon);
        }
        if segment == "." || segment == ".." {
            return Err(Ambiguity::DotSegment(segment.into_owned()));
        }
        out.extend(percent_encoding::utf8_percent_encode(&segment, SEGMENT));
    }
    Ok(out)
}

/// The decoded form of a canonical path (whose segments hold no encoded '/').
fn decoded_path(canonical: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(canonical).decode_utf8_lossy()
}

/// The canonical query, and whether it asks to follow (`follow=true`).
fn canonical_query(raw: &str) -> Result<(Option<String>, bool), Ambiguity> {
    let mut seen: Vec<Cow<str>> = Vec::new();
    let mut out = String::with_capacity(raw.len());
    let mut follow = false;
    for pair in raw.split('&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(';') {
            return Err(Ambiguity::QuerySemicolon);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_form(k, "query", false)?;
        let mut value = decode_form(v, "query value", true)?;
        if BOOLEAN_PARAMETERS.contains(&&*key) {
            let yes = go_bool(&value);
            follow |= yes && key == "follow";
            value = Cow::Borrowed(if yes { "true" } else { "false" });
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(percent_encoding::utf8_percent_encode(&key, QUERY));
        out.push('=');
        out.extend(percent_encoding::utf8_percent_encode(&value, QUERY));
        if !LIST_PARAMETERS.contains(&&*key) {
            if seen.contains(&key) {
                return Err(Ambiguity::RepeatedParameter(key.into_owned()));
            }
            seen.push(key);
        }
    }
    Ok(((!out.is_empty()).then_some(out), follow))
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

    fn strict(method: &str, target: &str) -> Result<ParsedRequest, Ambiguity> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        ParsedRequest::parse(method, path, query)
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let refused = [
            ("/api/v1/namespaces/dev/pods/web/log/../exec", "dot"),
            ("/api/v1/namespaces/dev/pods/web/%2e%2e/exec", "dot"),
            ("/api/v1/namespaces/dev/pods/./web", "dot"),
            ("//api/v1/watch/namespaces/dev/pods", "empty"),
            ("/api/v1//namespaces/dev/pods", "empty"),
            ("/api/v1/namespaces/dev/pods/web%2Fexec", "slash"),
            ("/api/v1/namespaces/dev/pods/web;x=1", "semicolon"),
            ("/api/v1/namespaces/dev/pods/%zz", "encoding"),
            ("/api/v1/namespaces/dev/pods/%ff", "encoding"),
            ("/api/v1/namespaces/dev/pods/a%00b", "control"),
            ("api/v1/pods", "relative"),
            (
                "/api/v1/namespaces/dev/configmaps?fieldSelector=metadata.name%3Dapp-config&fieldSelector=metadata.name%3Dprivate-config",
                "repeated",
            ),
            ("/api/v1/pods?watch=0&watch=1", "repeated"),
            ("/api/v1/pods?watch=0&%77atch=1", "repeated"),
            ("/api/v1/pods?watch=1;x=2", "semicolon"),
            ("/api/v1/pods?labelSelector=%zz", "encoding"),
            ("/api/v1/pods?limit=1%00", "control"),
        ];
        for (target, why) in refused {
            let err = strict("GET", target).expect_err(target);
            let text = format!("{err:?}").to_lowercase();
            assert!(text.contains(why), "{target}: {err:?}");
        }
    }

    #[test]
    fn the_forwarded_request_is_the_authorized_one() {
        // Every spelling of a watch is one: forwarded as watch=true, and long-lived.
        for q in [
            "watch=1",
            "%77atch=1",
            "watch",
            "watch=",
            "watch=TRUE",
            "watch=yes",
        ] {
            let p = strict("GET", &format!("/api/v1/namespaces/dev/pods?{q}")).unwrap();
            assert_eq!(p.info.verb, "watch", "{q}");
            assert_eq!(p.query.as_deref(), Some("watch=true"), "{q}");
            assert!(p.long_lived, "{q}");
        }
        for q in ["watch=0", "watch=false", "watch=False"] {
            let p = strict("GET", &format!("/api/v1/namespaces/dev/pods?{q}")).unwrap();
            assert_eq!(p.info.verb, "list", "{q}");
            assert_eq!(p.query.as_deref(), Some("watch=false"), "{q}");
            assert!(!p.long_lived, "{q}");
        }
        for q in ["follow=true", "%66ollow=true", "follow"] {
            let p = strict("GET", &format!("/api/v1/namespaces/dev/pods/web/log?{q}")).unwrap();
            assert_eq!(p.query.as_deref(), Some("follow=true"), "{q}");
            assert!(p.long_lived, "{q}");
        }
        let p = strict("GET", "/api/v1/namespaces/dev/pods/web/log?follow=false").unwrap();
        assert!(!p.long_lived);
        // The legacy watch path is a watch.
        let p = strict("GET", "/api/v1/watch/namespaces/dev/pods").unwrap();
        assert!(p.long_lived && p.info.verb == "watch");
        // A name selector names the object; the query is re-encoded, not changed.
        let p = strict(
            "GET",
            "/api/v1/namespaces/dev/configmaps?fieldSelector=metadata.name%3Dapp-config&limit=500",
        )
        .unwrap();
        assert_eq!(p.info.name, "app-config");
        assert_eq!(
            p.query.as_deref(),
            Some("fieldSelector=metadata.name%3Dapp-config&limit=500")
        );
        for selector in [
            "metadata.name%3Dapp-config%2Cmetadata.name%3Dother",
            "metadata.name%3D%3Dapp-config",
            "metadata.namespace%3Ddev%2Cmetadata.name%3Dapp-config",
        ] {
            let target = format!("/api/v1/namespaces/dev/configmaps?fieldSelector={selector}");
            assert_eq!(strict("GET", &target).unwrap().info.name, "app-config");
        }
        for selector in [
            "",
            "metadata.name!%3Dapp-config",
            "metadata.name%3Da%5C%2Cb",
        ] {
            let target = format!("/api/v1/namespaces/dev/configmaps?fieldSelector={selector}");
            assert_eq!(strict("GET", &target).unwrap().info.name, "", "{selector}");
        }
        // Exec commands repeat; plus and %20 both mean a space and are forwarded as %20.
        let p = strict(
            "POST",
            "/api/v1/namespaces/dev/pods/web/exec?command=sh&command=-c&command=echo+a%0Aecho%20b&stdout=true",
        )
        .unwrap();
        assert_eq!(
            p.query.as_deref(),
            Some("command=sh&command=-c&command=echo%20a%0Aecho%20b&stdout=true")
        );
        assert_eq!(p.info.subresource, "exec");
        // Paths: decoded once, encoded again; a trailing slash is kept.
        let p = strict("GET", "/api/v1/namespaces/d%65v/pods/").unwrap();
        assert_eq!(p.path, "/api/v1/namespaces/dev/pods/");
        assert_eq!(p.info.namespace, "dev");
        assert_eq!(strict("GET", "/").unwrap().path, "/");
        let p = strict("GET", "/api/v1/namespaces/dev/services/web:80/proxy/a%20b").unwrap();
        assert_eq!(p.path, "/api/v1/namespaces/dev/services/web:80/proxy/a%20b");
        assert!(p.long_lived);
    }

    /// The cases the relay's own detection was tested with, before the parse decided.
    #[test]
    fn long_lived_requests_are_told_apart() {
        for long in [
            "/api/v1/pods?watch=true",
            "/api/v1/namespaces/dev/pods?labelSelector=a%3Db&watch=1&resourceVersion=5",
            "/api/v1/watch/namespaces/dev/pods",
            "/apis/apps/v1/watch/deployments",
            "/api/v1/namespaces/dev/pods/p/log?follow=true&container=c",
        ] {
            assert!(strict("GET", long).unwrap().long_lived, "{long}");
        }
        for short in [
            "/api/v1/pods",
            "/api/v1/pods?watch=false",
            "/api/v1/pods?watch=0&limit=500",
            "/api/v1/namespaces/dev/pods/p/log?follow=false",
            "/api/v1/namespaces/watch/pods",
            "/apis/watch/v1/things",
            "/version?timeout=5s",
            "/",
        ] {
            assert!(!strict("GET", short).unwrap().long_lived, "{short}");
        }
    }
}
