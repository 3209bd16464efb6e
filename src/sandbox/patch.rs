//! The three PATCH flavours kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and Kubernetes strategic merge patch.
//!
//! Strategic merge needs per-field knowledge the apiserver takes from Go struct tags
//! (`patchStrategy`/`patchMergeKey`). We keep a small table of the fields that matter for the
//! built-in kinds; any other list is replaced wholesale, which is also the apiserver's default.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    if !path.starts_with('/') {
        return Err(format!("invalid JSON pointer {path:?}"));
    }
    let idx = path.rfind('/').unwrap_or(0);
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace_only: bool) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let target = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("path {parent:?} does not exist"))?;
    match target {
        Value::Object(map) => {
            if replace_only && !map.contains_key(&last) {
                return Err(format!(
                    "replace operation does not apply: doc is missing key: {path}"
                ));
            }
            map.insert(last, value);
        }
        Value::Array(arr) => {
            if last == "-" && !replace_only {
                arr.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid array index {last:?} in {path:?}"))?;
                if replace_only {
                    let slot = arr
                        .get_mut(i)
                        .ok_or_else(|| format!("index {i} out of range in {path:?}"))?;
                    *slot = value;
                } else {
                    if i > arr.len() {
                        return Err(format!("index {i} out of range in {path:?}"));
                    }
                    arr.insert(i, value);
                }
            }
        }
        _ => return Err(format!("path {parent:?} is not a container")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let target = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("path {parent:?} does not exist"))?;
    match target {
        Value::Object(map) => map
            .remove(&last)
            .ok_or_else(|| format!("remove operation does not apply: doc is missing path: {path}")),
        Value::Array(arr) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?} in {path:?}"))?;
            if i >= arr.len() {
                return Err(format!("index {i} out of range in {path:?}"));
            }
            Ok(arr.remove(i))
        }
        _ => Err(format!("path {parent:?} is not a container")),
    }
}

/// RFC 6902. The document is changed only if every operation succeeds.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut doc = doc.clone();
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{kind} operation without \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{kind} operation without \"from\""))
        };
        match kind {
            "add" => add_at(&mut doc, path, value()?, false)?,
            "replace" => add_at(&mut doc, path, value()?, true)?,
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            "move" => {
                let v = remove_at(&mut doc, from()?)?;
                add_at(&mut doc, path, v, false)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("copy from a missing path {path:?}"))?;
                add_at(&mut doc, path, v, false)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(doc)
}

/// How a list field merges under strategic merge patch.
pub(super) enum ListStrategy {
    /// Elements are objects merged by this key.
    MergeKey(&'static str),
    /// A set of primitives (patchStrategy=merge without key), e.g. finalizers.
    MergePrimitives,
    Replace,
}

/// The merge strategy of list `field` whose current/patch elements are `sample`.
/// Mirrors the Go struct tags of k8s.io/api for the fields people actually patch.
pub(super) fn list_strategy(field: &str, sample: Option<&Value>) -> ListStrategy {
    let has = |k: &str| sample.is_some_and(|s| s.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => ListStrategy::MergeKey("name"),
        // k8s.io/api merges volumeMounts by mountPath (not name), volumeDevices by devicePath.
        "volumeMounts" => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeKey("devicePath"),
        // Container ports merge by containerPort, service ports by port.
        "ports" if has("containerPort") => ListStrategy::MergeKey("containerPort"),
        "ports" if has("port") => ListStrategy::MergeKey("port"),
        "ports" if has("name") => ListStrategy::MergeKey("name"),
        "conditions" if has("type") => ListStrategy::MergeKey("type"),
        "ownerReferences" => ListStrategy::MergeKey("uid"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "finalizers" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

fn is_directive(k: &str) -> bool {
    k.starts_with('$')
}

/// Applies a strategic merge patch to `original` and returns the result.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    match merge_map(original.as_object().cloned().unwrap_or_default(), p)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err("a strategic merge patch cannot delete the whole object".into()),
    }
}

/// Returns `None` when the patch says `$patch: delete` for this map.
fn merge_map(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut m = patch.clone();
            m.remove("$patch");
            return Ok(Some(strip_directives(m)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type {other:?}")),
    }

    // `$retainKeys`: drop every key of the original that is not listed (used by `retainKeys`
    // strategies such as deployment `strategy` and volume sources).
    if let Some(retain) = patch.get("$retainKeys") {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        orig.retain(|k, _| keys.contains(&k.as_str()));
    }

    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = v
                .as_array()
                .ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
        }
    }

    for (k, v) in patch {
        if is_directive(k) {
            continue;
        }
        if v.is_null() {
            orig.remove(k);
            continue;
        }
        let merged = match (orig.remove(k), v) {
            (Some(Value::Object(o)), Value::Object(pm)) => merge_map(o, pm)?.map(Value::Object),
            (Some(Value::Array(o)), Value::Array(pl)) => Some(Value::Array(merge_list(k, o, pl)?)),
            (_, Value::Object(pm)) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    None
                } else {
                    Some(Value::Object(strip_directives(pm.clone())))
                }
            }
            (_, Value::Array(pl)) => Some(Value::Array(merge_list(k, Vec::new(), pl)?)),
            (_, other) => Some(other.clone()),
        };
        if let Some(m) = merged {
            orig.insert(k.clone(), m);
        }
    }

    for (k, order) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = order.as_array().ok_or("$setElementOrder must be a list")?;
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                let sample = list.first().cloned();
                reorder(field, list, order, sample.as_ref());
            }
        }
    }
    Ok(Some(orig))
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !is_directive(k));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

fn merge_list(field: &str, orig: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, String> {
    // A `{"$patch": "replace"}` element means: the list is exactly the other elements.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect());
    }
    let sample = orig.iter().chain(patch.iter()).find(|e| e.is_object());
    match list_strategy(field, sample) {
        ListStrategy::Replace => Ok(patch
            .iter()
            .map(|e| match e {
                Value::Object(m) => Value::Object(strip_directives(m.clone())),
                other => other.clone(),
            })
            .collect()),
        ListStrategy::MergePrimitives => {
            let mut out = orig;
            for e in patch {
                if !out.contains(e) {
                    out.push(e.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeKey(key) => {
            let mut out = orig;
            for e in patch {
                let Value::Object(pm) = e else {
                    return Err(format!("list {field:?} must contain objects"));
                };
                let id = pm.get(key).ok_or_else(|| {
                    format!("map: {pm:?} does not contain declared merge key: {key}")
                })?;
                let pos = out.iter().position(|x| x.get(key) == Some(id));
                match (pos, pm.get("$patch").and_then(Value::as_str)) {
                    (Some(i), Some("delete")) => {
                        out.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        let o = out[i].as_object().cloned().unwrap_or_default();
                        match merge_map(o, pm)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (None, _) => out.push(Value::Object(strip_directives(pm.clone()))),
                }
            }
            Ok(out)
        }
    }
}

/// Puts the listed elements first, in the given order; elements the patch did not mention
/// (added by someone else) keep their relative order after them.
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value], sample: Option<&Value>) {
    let key = match list_strategy(field, sample) {
        ListStrategy::MergeKey(k) => Some(k),
        _ => None,
    };
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut rest: Vec<Value> = std::mem::take(list);
    let mut out = Vec::with_capacity(rest.len());
    for o in order {
        let want = ident(o);
        if let Some(i) = rest.iter().position(|x| ident(x) == want) {
            out.push(rest.remove(i));
        }
    }
    out.extend(rest);
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                        {"name": "sidecar", "image": "envoy:1"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }}
            }
        })
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "add", "path": "/spec/list/0", "value": 0},
                {"op": "remove", "path": "/spec/list/1"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
                {"op": "move", "from": "/spec/copy", "path": "/moved"},
                {"op": "test", "path": "/moved", "value": 3},
                {"op": "add", "path": "/metadata", "value": {"a~b/c": 1}}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec": {"replicas": 3, "list": [0, 2, 3]}, "moved": 3, "metadata": {"a~b/c": 1}})
        );
        assert!(json_patch(
            &doc,
            &json!([{"op": "replace", "path": "/nope", "value": 1}])
        )
        .is_err());
        assert!(json_patch(
            &doc,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 2}])
        )
        .is_err());
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let patch = json!({
            "spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"name": "web", "image": "nginx:1.27",
                                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                                "env": [{"name": "C", "value": "3"}]}]
            }}}
        });
        let out = strategic_merge(&deploy(), &patch).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "nginx:1.27");
        assert_eq!(
            c[0]["ports"][0]["containerPort"], 80,
            "untouched fields survive"
        );
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 3);
        assert_eq!(c[0]["env"][2]["name"], "C");
        assert_eq!(c[1]["image"], "envoy:1");
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        assert!(c[0].get("$setElementOrder/env").is_none());
    }

    #[test]
    fn strategic_directives() {
        // Delete one container, reorder, delete a label, delete from a primitive list.
        let patch = json!({
            "metadata": {"labels": {"app": null, "x": "y"}, "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "template": {"spec": {
                    "containers": [{"name": "sidecar", "$patch": "delete"}],
                    "volumes": [{"$patch": "replace"}, {"name": "cache", "emptyDir": {}}]
                }}
            }
        });
        let out = strategic_merge(&deploy(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        assert_eq!(spec["volumes"], json!([{"name": "cache", "emptyDir": {}}]));

        let replaced = strategic_merge(
            &deploy(),
            &json!({"spec": {"$patch": "replace", "replicas": 9}}),
        )
        .unwrap();
        assert_eq!(replaced["spec"], json!({"replicas": 9}));
    }

    #[test]
    fn strategic_ports_and_plain_lists() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
                                  "args": ["a", "b"]}});
        let out = strategic_merge(
            &svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "args": ["c"]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"port": 80, "name": "http", "targetPort": 8080})
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["args"], json!(["c"]));
        assert!(strategic_merge(&svc, &json!([1])).is_err());
        assert!(strategic_merge(&svc, &json!({"spec": {"ports": [{"targetPort": 1}]}})).is_err());
    }
}
