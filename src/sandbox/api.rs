//! The resource verbs: get, list, create, update, patch, delete, deletecollection, and the
//! `scale` subresource.

// Errors here are finished HTTP responses (a k8s Status), made at most once per request;
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::controller;
use super::discovery::ResourceInfo;
use super::ephemeral;
use super::managed;
use super::patch;
use super::proto;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{now_rfc3339, res_key, StoreError};
use super::table::{self, IncludeObject};
use super::{bad_request, json_ok, status, store_error, wants_table, Sandbox};
use crate::body::{self, Body};

/// One parsed resource request.
pub struct Req<'a> {
    pub sandbox: &'a Arc<Sandbox>,
    pub res: &'a ResourceInfo,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub query: &'a HashMap<String, String>,
    pub accept: &'a str,
    pub content_type: &'a str,
    pub body: Bytes,
    /// Who the request acts as, from its `Impersonate-*` headers.
    pub impersonated: Option<(String, Vec<String>)>,
    pub user_agent: &'a str,
}

impl Req<'_> {
    pub fn ns(&self) -> &str {
        self.namespace.unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.name.unwrap_or("")
    }

    pub fn key(&self) -> String {
        self.res.store_key()
    }

    pub fn selectors(&self) -> Result<(LabelSelector, FieldSelector), Response<Body>> {
        let label =
            LabelSelector::parse(self.query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| bad_request(&e))?;
        let field =
            FieldSelector::parse(self.query.get("fieldSelector").map_or("", String::as_str))
                .map_err(|e| bad_request(&e))?;
        Ok((label, field))
    }

    pub fn table(&self) -> bool {
        wants_table(self.accept)
    }

    pub fn include(&self) -> IncludeObject {
        IncludeObject::parse(self.query.get("includeObject").map(String::as_str))
    }

    /// Who `managedFields` says made a change: the `fieldManager` parameter, else the first
    /// word of the User-Agent (`kubectl`), as the apiserver derives it.
    fn manager(&self) -> String {
        match self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => m.clone(),
            None => self
                .user_agent
                .split('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(128)
                .collect(),
        }
    }

    fn scope(&self) -> managed::Scope {
        if self.sub == Some("status") {
            managed::Scope::Status
        } else {
            managed::Scope::Main {
                status_is_sub: self.res.subresources.iter().any(|s| s.name == "status"),
            }
        }
    }

    /// Records this request's change of `old` into `new` in `new`'s managedFields.
    fn track(&self, old: Option<&Value>, new: &mut Value, subresource: &str) {
        managed::track_update(
            old,
            new,
            &self.manager(),
            &self.res.api_version(),
            subresource,
            self.scope(),
            &now_rfc3339(),
        );
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| !v.is_empty())
    }

    fn body_json(&self) -> Result<Value, Response<Body>> {
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return proto::decode(&self.body, &self.res.kind).map_err(|e| match e {
                proto::ProtoError::UnsupportedKind(kind) => status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!(
                        "the sandbox cannot decode {kind} from protobuf; send application/json"
                    ),
                ),
                proto::ProtoError::Malformed(msg) => bad_request(&format!(
                    "the protobuf request body could not be decoded: {msg}"
                )),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            bad_request(&format!(
                "the request body could not be decoded as JSON: {e}"
            ))
        })
    }
}

/// Stamps the requested group-version and kind: group versions share storage.
pub fn present(res: &ResourceInfo, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(res.api_version()));
        m.insert("kind".into(), json!(res.kind));
    }
    obj
}

fn object_response(code: StatusCode, req: &Req<'_>, obj: Value) -> Response<Body> {
    let obj = present(req.res, obj);
    if req.table() {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return body::json_response(
            code,
            &table::to_table(req.res, &[obj], req.include(), &rv, true),
        );
    }
    body::json_response(code, &obj)
}

pub fn get(req: &Req<'_>) -> Response<Body> {
    match req.sandbox.store.get(&req.key(), req.ns(), req.name()) {
        Some(obj) => object_response(StatusCode::OK, req, obj),
        None => store_error(StoreError::NotFound, req.res, req.name()),
    }
}

pub fn list(req: &Req<'_>) -> Response<Body> {
    let (label, field) = match req.selectors() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let (objects, rv) = req.sandbox.store.list(&req.key(), req.namespace);
    let items: Vec<Value> = objects
        .into_iter()
        .filter(|o| label.matches(o) && field.matches(o))
        .map(|o| present(req.res, o))
        .collect();
    let rv = rv.to_string();
    if req.table() {
        return json_ok(&table::to_table(req.res, &items, req.include(), &rv, true));
    }
    json_ok(&json!({
        "kind": format!("{}List", req.res.kind),
        "apiVersion": req.res.api_version(),
        "metadata": {"resourceVersion": rv},
        "items": items,
    }))
}

/// Clears what a client may not set on a new object.
fn prepare_new(req: &Req<'_>, obj: &mut Value) -> Result<(), Response<Body>> {
    if !obj.is_object() {
        return Err(bad_request("the request body must be a JSON object"));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != req.res.kind {
            return Err(bad_request(&format!(
                "the API version in the data ({}) does not match the expected API version ({}) or kind {kind:?} is not {:?}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                req.res.api_version(),
                req.res.kind
            )));
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if req.res.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != req.ns() => {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => meta["namespace"] = json!(req.ns()),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

pub fn create(req: &Req<'_>) -> Response<Body> {
    if !req.res.has_verb("create") {
        return super::method_not_allowed(&http::Method::POST);
    }
    let mut obj = match req.body_json() {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(resp) = prepare_new(req, &mut obj) {
        return resp;
    }
    if let Some(answer) = review(req.res, &obj, req.impersonated.as_ref()) {
        return object_response(StatusCode::CREATED, req, answer);
    }
    let meta = &mut obj["metadata"];
    if let Some(m) = meta.as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "managedFields",
        ] {
            m.remove(field);
        }
    }
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let suffix = controller::safe_encode(rand::random::<u64>(), 5);
                meta["name"] = json!(format!("{prefix}{suffix}"));
            }
            _ => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", req.res.kind),
                )
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_string();
    let mut obj = present(req.res, obj);
    req.track(None, &mut obj, "");
    let store = &req.sandbox.store;
    if req.res.namespaced
        && store
            .get(&res_key("", "namespaces"), "", req.ns())
            .is_none()
    {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{}\" not found", req.ns()),
        );
    }
    if req.dry_run() {
        if store.get(&req.key(), req.ns(), &name).is_some() {
            return store_error(StoreError::AlreadyExists, req.res, &name);
        }
        let mut obj = obj;
        controller::default_on_create(&req.key(), &mut obj);
        return object_response(StatusCode::CREATED, req, obj);
    }
    match store.write(|txn| controller::create(txn, &req.key(), obj)) {
        Ok(created) => object_response(StatusCode::CREATED, req, created),
        Err(err) => store_error(err, req.res, &name),
    }
}

/// Reviews (`kubectl auth can-i`, `kubectl auth whoami`, token reviews) are create-only
/// questions, answered and never stored. The sandbox's one user may do everything.
fn review(
    res: &ResourceInfo,
    obj: &Value,
    impersonated: Option<&(String, Vec<String>)>,
) -> Option<Value> {
    let mut answer = obj.clone();
    match (res.group.as_str(), res.kind.as_str()) {
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            answer["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        ("authorization.k8s.io", _) => {
            answer["status"] =
                json!({"allowed": true, "reason": "the sandbox cluster allows every request"});
        }
        ("authentication.k8s.io", "SelfSubjectReview") => {
            answer["status"] = match impersonated {
                Some((user, groups)) => {
                    let mut groups = groups.clone();
                    groups.push("system:authenticated".into());
                    json!({"userInfo": {"username": user, "groups": groups}})
                }
                None => {
                    json!({"userInfo": {"username": "sandbox-user", "groups": ["system:masters", "system:authenticated"]}})
                }
            };
        }
        ("authentication.k8s.io", "TokenReview") => {
            answer["status"] = json!({"authenticated": true, "user": {"username": "sandbox-user", "groups": ["system:authenticated"]}});
        }
        _ => return None,
    }
    Some(answer)
}

/// Fills in what an update must keep from the stored object: identity, and the part a
/// subresource request may not touch (spec for `/status`, status for the main resource).
fn merge_for_update(
    req: &Req<'_>,
    current: &Value,
    mut new: Value,
) -> Result<Value, Response<Body>> {
    if !new.is_object() {
        return Err(bad_request("the request body must be a JSON object"));
    }
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    match new.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != req.name() => {
            return Err(bad_request(&format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                req.name()
            )))
        }
        _ => new["metadata"]["name"] = json!(req.name()),
    }
    if req.res.namespaced {
        new["metadata"]["namespace"] = json!(req.ns());
    }
    let has_status_sub = req.res.subresources.iter().any(|s| s.name == "status");
    if req.sub == Some("ephemeralcontainers") {
        let out = ephemeral::prepare_update(current, &new);
        let errs = ephemeral::validate_update(current, &out);
        if !errs.is_empty() {
            return Err(super::invalid(req.res, req.name(), &errs));
        }
        return Ok(out);
    }
    if req.res.group.is_empty() && req.res.kind == "Pod" && req.sub.is_none() {
        // Ephemeral containers change only through their subresource.
        match current.pointer("/spec/ephemeralContainers") {
            Some(ecs) if new["spec"].is_object() => {
                new["spec"]["ephemeralContainers"] = ecs.clone()
            }
            _ => {
                if let Some(spec) = new["spec"].as_object_mut() {
                    spec.remove("ephemeralContainers");
                }
            }
        }
    }
    if req.sub == Some("status") {
        let mut out = current.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if let Some(rv) = new.pointer("/metadata/resourceVersion") {
            out["metadata"]["resourceVersion"] = rv.clone();
        }
        return Ok(out);
    }
    if has_status_sub {
        match current.get("status") {
            Some(st) => new["status"] = st.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    Ok(present(req.res, new))
}

pub fn update(req: &Req<'_>) -> Response<Body> {
    let new = match req.body_json() {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let key = req.key();
    let result = req.sandbox.store.write(|txn| {
        let Some(current) = txn.get(&key, req.ns(), req.name()).cloned() else {
            return Err(store_error(StoreError::NotFound, req.res, req.name()));
        };
        let mut merged = merge_for_update(req, &current, new)?;
        req.track(Some(&current), &mut merged, req.sub.unwrap_or(""));
        if req.dry_run() {
            return Ok(merged);
        }
        controller::update(txn, &key, merged).map_err(|e| store_error(e, req.res, req.name()))
    });
    match result {
        Ok(obj) => object_response(StatusCode::OK, req, obj),
        Err(resp) => resp,
    }
}

/// Applies the request's patch document to `current`, by Content-Type.
fn apply_patch(req: &Req<'_>, current: &Value) -> Result<Value, Response<Body>> {
    let media = req.content_type.split(';').next().unwrap_or("").trim();
    let doc = req.body_json()?;
    match media {
        "application/merge-patch+json" => {
            let mut out = current.clone();
            patch::merge_patch(&mut out, &doc);
            Ok(out)
        }
        "application/strategic-merge-patch+json" => {
            patch::strategic_merge(current, &doc).map_err(|e| bad_request(&e))
        }
        "application/json-patch+json" => patch::json_patch(current, &doc).map_err(|e| {
            status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e)
        }),
        other => Err(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
        )),
    }
}

pub fn patch(req: &Req<'_>) -> Response<Body> {
    let media = req.content_type.split(';').next().unwrap_or("").trim();
    if media == "application/apply-patch+yaml" {
        return apply(req);
    }
    let key = req.key();
    let result = req.sandbox.store.write(|txn| {
        let Some(current) = txn.get(&key, req.ns(), req.name()).cloned() else {
            return Err(store_error(StoreError::NotFound, req.res, req.name()));
        };
        let patched = apply_patch(req, &current)?;
        let mut merged = merge_for_update(req, &current, patched)?;
        req.track(Some(&current), &mut merged, req.sub.unwrap_or(""));
        if req.dry_run() {
            return Ok(merged);
        }
        controller::update(txn, &key, merged).map_err(|e| store_error(e, req.res, req.name()))
    });
    match result {
        Ok(obj) => object_response(StatusCode::OK, req, obj),
        Err(resp) => resp,
    }
}

pub fn delete(req: &Req<'_>) -> Response<Body> {
    // The body is DeleteOptions (propagationPolicy, gracePeriodSeconds): deletion here is
    // always immediate with background garbage collection, so it only has to be valid.
    if !req.body.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<Value>(&req.body).is_err()
    {
        return bad_request("the DeleteOptions in the request body could not be decoded");
    }
    if req.dry_run() {
        return match req.sandbox.store.get(&req.key(), req.ns(), req.name()) {
            Some(obj) => object_response(StatusCode::OK, req, obj),
            None => store_error(StoreError::NotFound, req.res, req.name()),
        };
    }
    let key = req.key();
    match req
        .sandbox
        .store
        .write(|txn| controller::delete(txn, &key, req.ns(), req.name()))
    {
        Ok(obj) => object_response(StatusCode::OK, req, obj),
        Err(err) => store_error(err, req.res, req.name()),
    }
}

pub fn delete_collection(req: &Req<'_>) -> Response<Body> {
    if !req.res.has_verb("deletecollection") {
        return super::method_not_allowed(&http::Method::DELETE);
    }
    let (label, field) = match req.selectors() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let key = req.key();
    let deleted: Vec<Value> = req.sandbox.store.write(|txn| {
        let targets: Vec<Value> = txn
            .list(&key, req.namespace)
            .into_iter()
            .filter(|o| label.matches(o) && field.matches(o))
            .collect();
        targets
            .into_iter()
            .filter_map(|o| {
                let ns = o
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let name = o
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                controller::delete(txn, &key, &ns, &name).ok()
            })
            .map(|o| present(req.res, o))
            .collect()
    });
    json_ok(&json!({
        "kind": format!("{}List", req.res.kind),
        "apiVersion": req.res.api_version(),
        "metadata": {"resourceVersion": req.sandbox.store.resource_version().to_string()},
        "items": deleted,
    }))
}

fn scale_of(obj: &Value) -> Value {
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

pub fn get_scale(req: &Req<'_>) -> Response<Body> {
    match req.sandbox.store.get(&req.key(), req.ns(), req.name()) {
        Some(obj) => json_ok(&scale_of(&obj)),
        None => store_error(StoreError::NotFound, req.res, req.name()),
    }
}

/// PUT or PATCH of `/scale`: the result's `spec.replicas` goes to the parent object.
pub fn update_scale(req: &Req<'_>, is_patch: bool) -> Response<Body> {
    let key = req.key();
    let result = req.sandbox.store.write(|txn| {
        let Some(current) = txn.get(&key, req.ns(), req.name()).cloned() else {
            return Err(store_error(StoreError::NotFound, req.res, req.name()));
        };
        let scale = scale_of(&current);
        let new_scale = if is_patch {
            apply_patch(req, &scale)?
        } else {
            req.body_json()?
        };
        let replicas = new_scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "Scale.spec.replicas: Invalid value: must be greater than or equal to 0",
                )
            })?;
        let mut obj = current.clone();
        obj["spec"]["replicas"] = json!(replicas);
        req.track(Some(&current), &mut obj, "scale");
        if let Some(rv) = new_scale
            .pointer("/metadata/resourceVersion")
            .filter(|v| v.is_string())
        {
            obj["metadata"]["resourceVersion"] = rv.clone();
        }
        controller::update(txn, &key, obj).map_err(|e| store_error(e, req.res, req.name()))
    });
    match result {
        Ok(obj) => json_ok(&scale_of(&obj)),
        Err(resp) => resp,
    }
}

/// Server-side apply: `PATCH` with `application/apply-patch+yaml` (YAML or JSON), creating the
/// object when it is missing. See `managed` for the merge and conflict rules.
pub fn apply(req: &Req<'_>) -> Response<Body> {
    let Some(manager) = req.query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
    };
    let force = req
        .query
        .get("force")
        .is_some_and(|f| crate::request_info::go_bool(f));
    let applied: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => match serde_yaml_ng::from_slice::<Value>(&req.body) {
            Ok(v) => v,
            Err(e) => return bad_request(&format!("error decoding YAML: {e}")),
        },
    };
    if !applied.is_object() {
        return bad_request("the apply configuration must be an object");
    }
    let (api_version, kind) = (
        applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(""),
        applied.get("kind").and_then(Value::as_str).unwrap_or(""),
    );
    if api_version.is_empty() || kind.is_empty() {
        return bad_request("apiVersion and kind must be set in an apply configuration");
    }
    if api_version != req.res.api_version() || kind != req.res.kind {
        return bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or kind {kind:?} is not {:?}",
            req.res.api_version(),
            req.res.kind
        ));
    }
    match applied.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == req.name() => {}
        Some(n) => {
            return bad_request(&format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                req.name()
            ))
        }
        None => return bad_request("metadata.name must be set in an apply configuration"),
    }
    if let Some(ns) = applied
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        if req.res.namespaced && !ns.is_empty() && ns != req.ns() {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
    }
    let key = req.key();
    let now = now_rfc3339();
    let result = req.sandbox.store.write(|txn| {
        let current = txn.get(&key, req.ns(), req.name()).cloned();
        if current.is_none() && req.sub.is_some() {
            return Err(store_error(StoreError::NotFound, req.res, req.name()));
        }
        // A resourceVersion in the configuration is a precondition (`kubectl diff` locks so).
        let wanted_rv = applied
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty());
        if let Some(rv) = wanted_rv {
            let live_rv = current
                .as_ref()
                .and_then(|c| c.pointer("/metadata/resourceVersion"))
                .and_then(Value::as_str);
            if live_rv != Some(rv) {
                return Err(store_error(StoreError::Conflict, req.res, req.name()));
            }
        }
        let mut merged = managed::apply(
            current.as_ref(),
            &applied,
            manager,
            force,
            req.scope(),
            &now,
        )
        .map_err(|c| {
            let mut v = body::status_value(StatusCode::CONFLICT, "Conflict", &c.message());
            v["details"] = json!({"causes": c.causes()});
            body::json_response(StatusCode::CONFLICT, &v)
        })?;
        match current {
            None => {
                if req.res.namespaced && txn.get(&res_key("", "namespaces"), "", req.ns()).is_none()
                {
                    return Err(status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("namespaces \"{}\" not found", req.ns()),
                    ));
                }
                merged["metadata"]["name"] = json!(req.name());
                if req.res.namespaced {
                    merged["metadata"]["namespace"] = json!(req.ns());
                }
                let mut obj = present(req.res, merged);
                if req.dry_run() {
                    controller::default_on_create(&key, &mut obj);
                    return Ok((StatusCode::CREATED, obj));
                }
                controller::create(txn, &key, obj)
                    .map(|o| (StatusCode::CREATED, o))
                    .map_err(|e| store_error(e, req.res, req.name()))
            }
            Some(current) => {
                let merged = merge_for_update(req, &current, merged)?;
                if req.dry_run() || merged == current {
                    return Ok((StatusCode::OK, merged));
                }
                controller::update(txn, &key, merged)
                    .map(|o| (StatusCode::OK, o))
                    .map_err(|e| store_error(e, req.res, req.name()))
            }
        }
    });
    match result {
        Ok((code, obj)) => object_response(code, req, obj),
        Err(resp) => resp,
    }
}
