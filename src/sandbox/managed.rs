//! Field management (`metadata.managedFields`) and server-side apply, kept simple but real:
//!
//! - Every write through the API records who set which fields: an `Update` entry per manager
//!   (the `fieldManager` parameter, or the User-Agent's first word) owning the fields it
//!   changed, which the other managers then no longer own.
//! - An apply (`PATCH` with `application/apply-patch+yaml`) makes the manager's `Apply` entry
//!   exactly the fields of its configuration. A field it sets to a new value while another
//!   manager owns it is a conflict (409, the apiserver's message) unless `force=true`, which
//!   takes the field away from the others. A field the manager applied before, left out now and
//!   owned by nobody else, is removed from the object.
//! - Fields are paths as in `FieldsV1`: `f:` fields, `k:` list items by merge key (the lists
//!   `patch::list_strategy` knows), `v:` members of sets; other lists are atomic.
//!
//! The parts of structured-merge-diff left out: per-type schemas beyond that list table,
//! atomic maps, and a manager owning a field through a different API version.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::patch::{list_strategy, ListStrategy};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    Field(String),
    /// A list item by its merge key: the key object as compact JSON (`{"name":"web"}`).
    Key(String),
    /// A member of a set: the value as JSON.
    Value(String),
}

pub type Path = Vec<Pe>;
pub type FieldSet = BTreeSet<Path>;

/// `.spec.containers[name="web"].image`, as conflicts name fields.
pub fn path_string(path: &Path) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Pe::Key(k) => {
                let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push_str(&format!("[{}]", fields.join(",")));
            }
            Pe::Value(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

/// Which part of an object a write manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but status when status is a subresource.
    Main { status_is_sub: bool },
    /// `/status`: only status.
    Status,
}

/// Server-owned metadata, never managed.
const SERVER_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

fn in_scope(scope: Scope, top: &str) -> bool {
    match scope {
        Scope::Main { status_is_sub } => {
            !(matches!(top, "apiVersion" | "kind") || (status_is_sub && top == "status"))
        }
        Scope::Status => top == "status",
    }
}

/// The fields `obj` sets, within `scope`.
pub fn field_set(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if !in_scope(scope, k) {
                continue;
            }
            let mut path = vec![Pe::Field(k.clone())];
            if k == "metadata" {
                if let Some(meta) = v.as_object() {
                    for (mk, mv) in meta {
                        if SERVER_METADATA.contains(&mk.as_str()) {
                            continue;
                        }
                        path.push(Pe::Field(mk.clone()));
                        walk(mv, mk, &mut path, &mut out);
                        path.pop();
                    }
                }
                continue;
            }
            walk(v, k, &mut path, &mut out);
        }
    }
    out
}

fn key_of(item: &Value, key: &str) -> Option<String> {
    let k = item.get(key)?;
    Some(json!({ key: k }).to_string())
}

fn walk(v: &Value, field: &str, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Pe::Field(k.clone()));
                walk(child, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            match list_strategy(field, items.iter().find(|i| i.is_object())) {
                ListStrategy::MergeKey(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    for item in items {
                        let Some(k) = key_of(item, key) else { continue };
                        path.push(Pe::Key(k));
                        out.insert(path.clone());
                        if let Some(m) = item.as_object() {
                            for (ik, iv) in m {
                                path.push(Pe::Field(ik.clone()));
                                walk(iv, ik, path, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                }
                ListStrategy::MergePrimitives => {
                    for item in items {
                        path.push(Pe::Value(item.to_string()));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path` in `obj`.
pub fn get<'a>(obj: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in path {
        cur = match pe {
            Pe::Field(f) => cur.get(f)?,
            Pe::Key(k) => {
                let want: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|i| want.iter().all(|(k, v)| i.get(k) == Some(v)))?
            }
            Pe::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|i| **i == want)?
            }
        };
    }
    Some(cur)
}

/// Removes what `path` names from `obj` (a field, a list item, a set member).
fn remove(obj: &mut Value, path: &[Pe]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent {
        let next = match pe {
            Pe::Field(f) => cur.get_mut(f),
            Pe::Key(k) => {
                let want: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|i| want.iter().all(|(k, v)| i.get(k) == Some(v)))
                })
            }
            Pe::Value(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Pe::Key(k) => {
            let want: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !want.iter().all(|(k, v)| i.get(k) == Some(v)));
            }
        }
        Pe::Value(v) => {
            let want: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| *i != want);
            }
        }
    }
}

/// Merges an applied configuration into `live`: maps field by field, keyed lists item by item,
/// sets as unions, anything else replaced.
fn merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    l.remove(k);
                    continue;
                }
                match l.get_mut(k) {
                    Some(existing) => merge(existing, v, k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let sample = a.iter().chain(l.iter()).find(|i| i.is_object()).cloned();
            match list_strategy(field, sample.as_ref()) {
                ListStrategy::MergeKey(key) if a.iter().all(|i| i.get(key).is_some()) => {
                    for item in a {
                        match l.iter_mut().find(|i| i.get(key) == item.get(key)) {
                            Some(existing) => merge(existing, item, ""),
                            None => l.push(item.clone()),
                        }
                    }
                }
                ListStrategy::MergePrimitives => {
                    for item in a {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                _ => *l = a.clone(),
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_manager(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How conflicts name a manager (`printManager` in the apiserver).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode(&self.fields),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

fn element_key(pe: &Pe) -> String {
    match pe {
        Pe::Field(f) => format!("f:{f}"),
        Pe::Key(k) => format!("k:{k}"),
        Pe::Value(v) => format!("v:{v}"),
    }
}

/// A field set as `FieldsV1` JSON: a tree of `f:`/`k:`/`v:` keys, `{}` at the leaves and
/// `".": {}` where a path is itself owned and has owned children.
pub fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node
                .entry(element_key(pe))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field set nodes are objects");
        }
    }
    // Mark owned paths that are also prefixes of other owned paths.
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node
                .get_mut(&element_key(pe))
                .and_then(Value::as_object_mut)
                .expect("inserted above");
        }
        if !node.is_empty() && !node.contains_key(".") {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// `FieldsV1` JSON back to a field set; unknown keys are skipped.
pub fn decode(v: &Value) -> FieldSet {
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) {
        for (k, child) in node {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let pe = match k.split_once(':') {
                Some(("f", f)) => Pe::Field(f.to_string()),
                Some(("k", key)) => Pe::Key(
                    serde_json::from_str::<Value>(key)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|_| key.to_string()),
                ),
                Some(("v", val)) => Pe::Value(val.to_string()),
                _ => continue,
            };
            path.push(pe);
            match child.as_object() {
                Some(m) if !m.is_empty() => go(m, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        go(m, &mut Vec::new(), &mut out);
    }
    out
}

/// The entries of an object's `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let manager = s("manager");
            (!manager.is_empty() || e.get("fieldsV1").is_some()).then(|| Entry {
                manager,
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: s("subresource"),
                time: s("time"),
                fields: decode(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

fn store_entries(obj: &mut Value, list: &[Entry]) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let list: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    match obj["metadata"].as_object_mut() {
        Some(meta) if list.is_empty() => {
            meta.remove("managedFields");
        }
        Some(meta) => {
            meta.insert("managedFields".into(), json!(list));
        }
        None => {}
    }
}

/// The fields whose value differs between `old` and `new` (set, changed or removed).
fn changed(old: &Value, new: &Value, scope: Scope) -> FieldSet {
    let old_set = field_set(old, scope);
    let new_set = field_set(new, scope);
    let mut out: FieldSet = new_set
        .iter()
        .filter(|p| {
            let v = get(new, p);
            // An item marker changes only if the item is new; its fields speak for themselves.
            let is_item = matches!(p.last(), Some(Pe::Key(_)));
            if is_item {
                !old_set.contains(*p)
            } else {
                get(old, p) != v
            }
        })
        .cloned()
        .collect();
    out.extend(old_set.difference(&new_set).cloned());
    out
}

/// Records an `Update` by `manager` that turned `old` (None: a create) into `new`.
///
/// If the request itself changed `managedFields` (kubectl's migration to server-side apply
/// does, with a JSON patch), its list is taken as it is, as the apiserver does.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    scope: Scope,
    now: &str,
) {
    let old_entries = old.map(entries).unwrap_or_default();
    let requested = new.pointer("/metadata/managedFields").cloned();
    let old_raw = old.and_then(|o| o.pointer("/metadata/managedFields").cloned());
    let mut list = match &requested {
        Some(req) if old.is_none() || Some(req) != old_raw.as_ref() => entries(new),
        _ => old_entries,
    };
    let empty = json!({});
    let changed = changed(old.unwrap_or(&empty), new, scope);
    if !changed.is_empty() {
        let now_set = field_set(new, scope);
        for e in list.iter_mut() {
            e.fields.retain(|p| !changed.contains(p));
        }
        let owned: FieldSet = changed.intersection(&now_set).cloned().collect();
        if !owned.is_empty() {
            match list
                .iter_mut()
                .find(|e| e.same_manager(manager, "Update", subresource))
            {
                Some(e) => {
                    e.fields.extend(owned);
                    e.time = now.to_string();
                    e.api_version = api_version.to_string();
                }
                None => list.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: api_version.to_string(),
                    subresource: subresource.to_string(),
                    time: now.to_string(),
                    fields: owned,
                }),
            }
        }
    }
    store_entries(new, &list);
}

/// Fields another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflicts(pub Vec<(String, String)>);

impl Conflicts {
    /// The apiserver's message (`getConflictMessage`).
    pub fn message(&self) -> String {
        if let [(manager, path)] = self.0.as_slice() {
            return format!("Apply failed with 1 conflict: conflict with {manager}: {path}");
        }
        let mut managers: Vec<&String> = self.0.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in self.0.iter().filter(|(mm, _)| mm == m) {
                lines.push(format!("- {p}"));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }

    /// `details.causes` of the 409.
    pub fn causes(&self) -> Value {
        json!(self
            .0
            .iter()
            .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": p}))
            .collect::<Vec<_>>())
    }
}

/// Applies `applied` (the configuration `manager` wants) to `live` (None: the object does not
/// exist yet). Returns the object to store, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, Conflicts> {
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut list = entries(live_obj);
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let new_set = field_set(applied, scope);
    let mine = list
        .iter()
        .position(|e| e.same_manager(manager, "Apply", ""));
    let prev_set = mine.map(|i| list[i].fields.clone()).unwrap_or_default();

    // Conflicts: a value this apply changes in a field someone else owns.
    let mut conflicts = Vec::new();
    let mut taken = FieldSet::new();
    for p in &new_set {
        let new_value = get(applied, p);
        if matches!(new_value, Some(Value::Object(m)) if !m.is_empty()) {
            continue;
        }
        let Some(old_value) = get(live_obj, p) else {
            continue;
        };
        if Some(old_value) == new_value {
            continue;
        }
        for (i, e) in list.iter().enumerate() {
            if Some(i) != mine && e.fields.contains(p) {
                conflicts.push((e.describe(), path_string(p)));
                taken.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }

    let mut obj = live_obj.clone();
    // What this manager applied before, leaves out now, and nobody else owns: removed.
    let others: FieldSet = list
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .flat_map(|(_, e)| e.fields.iter().cloned())
        .filter(|p| !taken.contains(p))
        .collect();
    let mut dropped: Vec<&Path> = prev_set
        .difference(&new_set)
        .filter(|p| !others.contains(*p))
        .filter(|p| {
            !others
                .iter()
                .chain(new_set.iter())
                .any(|o| o.len() > p.len() && o.starts_with(p))
        })
        .collect();
    // A removed list item goes whole (its key field with it), so not field by field.
    let whole: Vec<&Path> = dropped.clone();
    dropped.retain(|p| !whole.iter().any(|w| w.len() < p.len() && p.starts_with(w)));
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove(&mut obj, p);
    }
    let mut config = applied.clone();
    if let Some(m) = config.as_object_mut() {
        m.retain(|k, _| in_scope(scope, k) || k == "apiVersion" || k == "kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                !SERVER_METADATA.contains(&k.as_str()) || k == "name" || k == "namespace"
            });
        }
    }
    merge(&mut obj, &config, "");

    for e in list.iter_mut() {
        e.fields.retain(|p| !taken.contains(p));
    }
    let object_changed = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            v
        };
        live.is_none() || strip(&obj) != strip(live_obj)
    };
    match mine {
        Some(i) => {
            let e = &mut list[i];
            if e.fields != new_set || object_changed || e.api_version != api_version {
                e.fields = new_set;
                e.time = now.to_string();
                e.api_version = api_version;
            }
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            subresource: String::new(),
            time: now.to_string(),
            fields: new_set,
        }),
    }
    // An apply keeps its entry even when it owns nothing (an empty configuration).
    let keep_empty = list
        .iter()
        .position(|e| e.same_manager(manager, "Apply", ""));
    let mut out_list: Vec<Value> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        if !e.fields.is_empty() || Some(i) == keep_empty {
            out_list.push(e.to_json());
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["managedFields"] = json!(out_list);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_is_sub: true,
    };

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "dev"}, "data": data})
    }

    fn owners(obj: &Value) -> Vec<(String, String, Vec<String>)> {
        entries(obj)
            .into_iter()
            .map(|e| {
                (
                    e.manager,
                    e.operation,
                    e.fields.iter().map(path_string).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn fields_v1_round_trip_with_keys_sets_and_dots() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "args": ["-g", "x"], "ports": [{"containerPort": 80}]}
            ]}}},
            "status": {"replicas": 2},
        });
        let set = field_set(&d, MAIN);
        let names: Vec<String> = set.iter().map(path_string).collect();
        assert!(
            names.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&".spec.template.spec.containers[name=\"web\"]".to_string()));
        assert!(
            names.contains(&".spec.template.spec.containers[name=\"web\"].args".to_string()),
            "atomic list"
        );
        assert!(names.contains(&".metadata.finalizers[=\"a\"]".to_string()));
        assert!(!names
            .iter()
            .any(|n| n.starts_with(".status") || n == ".metadata.name"));
        let encoded = encode(&set);
        let item =
            &encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert_eq!(item["f:ports"]["k:{\"containerPort\":80}"]["."], json!({}));
        assert_eq!(decode(&encoded), set);
    }

    #[test]
    fn apply_creates_then_is_idempotent() {
        let applied = cm(json!({"a": "1"}));
        let created = apply(None, &applied, "kubectl", false, MAIN, "t1").unwrap();
        assert_eq!(created["data"], json!({"a": "1"}));
        assert_eq!(
            owners(&created),
            [(
                "kubectl".into(),
                "Apply".into(),
                vec![".data.a".to_string()]
            )]
        );
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        let again = apply(Some(&created), &applied, "kubectl", false, MAIN, "t2").unwrap();
        assert_eq!(again, created, "nothing changed, not even the time");
    }

    #[test]
    fn conflict_with_another_manager_unless_forced() {
        let live = apply(
            None,
            &cm(json!({"a": "1", "b": "2"})),
            "alice",
            false,
            MAIN,
            "t1",
        )
        .unwrap();
        // Same value: shared ownership, no conflict.
        let shared = apply(
            Some(&live),
            &cm(json!({"a": "1"})),
            "bob",
            false,
            MAIN,
            "t2",
        )
        .unwrap();
        assert_eq!(owners(&shared).len(), 2);
        // A different value in a field alice owns.
        let err = apply(
            Some(&shared),
            &cm(json!({"a": "9", "b": "8"})),
            "bob",
            false,
            MAIN,
            "t3",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\n- .data.b"
        );
        let one = apply(
            Some(&shared),
            &cm(json!({"a": "9"})),
            "bob",
            false,
            MAIN,
            "t3",
        )
        .unwrap_err();
        assert_eq!(
            one.message(),
            "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
        );
        assert_eq!(one.causes()[0]["field"], ".data.a");
        // Forced: bob takes the field, alice keeps the rest.
        let forced = apply(
            Some(&shared),
            &cm(json!({"a": "9"})),
            "bob",
            true,
            MAIN,
            "t4",
        )
        .unwrap();
        assert_eq!(forced["data"], json!({"a": "9", "b": "2"}));
        assert_eq!(
            owners(&forced),
            [
                ("alice".into(), "Apply".into(), vec![".data.b".to_string()]),
                ("bob".into(), "Apply".into(), vec![".data.a".to_string()]),
            ]
        );
    }

    #[test]
    fn update_managers_conflict_and_dropped_fields_go() {
        let mut live = cm(json!({"a": "1"}));
        track_update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "v1",
            "",
            MAIN,
            "t0",
        );
        assert_eq!(
            owners(&live),
            [(
                "kubectl-client-side-apply".into(),
                "Update".into(),
                vec![".data.a".to_string()]
            )]
        );
        let err = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            "kubectl",
            false,
            MAIN,
            "t1",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.a"
        );
        let applied = apply(
            Some(&live),
            &cm(json!({"a": "1", "b": "2"})),
            "kubectl",
            false,
            MAIN,
            "t1",
        )
        .unwrap();
        // b was applied by kubectl alone: leaving it out removes it; a is still co-owned.
        let next = apply(
            Some(&applied),
            &cm(json!({"a": "1"})),
            "kubectl",
            false,
            MAIN,
            "t2",
        )
        .unwrap();
        assert_eq!(next["data"], json!({"a": "1"}));
        // An update by someone else takes the fields it changes away from the appliers.
        let mut edited = next.clone();
        edited["data"]["a"] = json!("5");
        track_update(
            Some(&next),
            &mut edited,
            "kubectl-edit",
            "v1",
            "",
            MAIN,
            "t3",
        );
        assert_eq!(
            owners(&edited),
            [(
                "kubectl-edit".into(),
                "Update".into(),
                vec![".data.a".to_string()]
            )]
        );
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let d = |image: &str, extra: bool| {
            let mut containers = vec![json!({"name": "web", "image": image})];
            if extra {
                containers.push(json!({"name": "side", "image": "busybox"}));
            }
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                   "spec": {"template": {"spec": {"containers": containers}}}})
        };
        let live = apply(None, &d("nginx:1", true), "a", false, MAIN, "t").unwrap();
        let next = apply(Some(&live), &d("nginx:2", false), "a", false, MAIN, "t").unwrap();
        assert_eq!(
            next["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2"}])
        );
        let err = apply(Some(&live), &d("nginx:3", false), "b", false, MAIN, "t").unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.template.spec.containers[name=\"web\"].image"
        );
    }
}
