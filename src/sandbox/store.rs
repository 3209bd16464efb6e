//! The in-memory object store: every object of every resource, one global resourceVersion,
//! and a broadcast of changes for watchers.
//!
//! All mutation happens inside `Store::write`, under one `std::sync::RwLock` that is never held
//! across an `.await`. Events are broadcast while the lock is held, so a watcher that subscribes
//! under the read lock sees exactly the changes after its snapshot: no gap, no duplicate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many past events are kept so that a watch from a recent resourceVersion (the one
/// kubectl got from its list a moment earlier) can be replayed.
const HISTORY: usize = 2048;

/// (resource key `group/resource`, namespace or "", name).
pub type ObjKey = (String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    /// Resource key, `group/resource` (`/pods` for the core group).
    pub res: String,
    pub namespace: String,
    pub rv: u64,
    pub object: Value,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("conflict")]
    Conflict,
    #[error("{0}")]
    Invalid(String),
}

struct Inner {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<Event>>,
}

pub struct Store {
    inner: RwLock<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

/// What a watcher starts from.
pub struct WatchStart {
    /// Events to send before live ones (synthetic ADDED or replayed history).
    pub initial: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

/// The resourceVersion asked for is older than the kept history (the apiserver's 410 Gone).
#[derive(Debug)]
pub struct TooOld;

pub fn res_key(group: &str, resource: &str) -> String {
    format!("{group}/{resource}")
}

pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Store {
    pub fn new() -> Store {
        let (events, _) = broadcast::channel(1024);
        Store {
            inner: RwLock::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while writing leaves the map consistent (each change is one insert/remove),
        // so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.read().rv
    }

    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<Value> {
        self.read()
            .objects
            .get(&(res.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of `res` (in `ns` if given), ordered by namespace then name, and the
    /// resourceVersion of that snapshot.
    pub fn list(&self, res: &str, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.read();
        (list_in(&inner.objects, res, ns), inner.rv)
    }

    /// Runs `f` with exclusive access. Keep `f` short and synchronous.
    pub fn write<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut txn = Txn {
            inner: &mut inner,
            events: &self.events,
        };
        f(&mut txn)
    }

    /// Subscribes to changes of `res` (in `ns` if given) after `rv`; `None` means "from now,
    /// with the current objects first as ADDED events".
    pub fn watch(
        &self,
        res: &str,
        ns: Option<&str>,
        rv: Option<u64>,
    ) -> Result<WatchStart, TooOld> {
        let inner = self.read();
        let rx = self.events.subscribe();
        let initial = match rv {
            None => list_in(&inner.objects, res, ns)
                .into_iter()
                .map(|object| {
                    Arc::new(Event {
                        kind: EventType::Added,
                        res: res.to_string(),
                        namespace: meta_str(&object, "namespace").to_string(),
                        rv: inner.rv,
                        object,
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                // History is complete from `oldest`; a start point before it would lose events.
                if rv + 1 < oldest && rv < inner.rv {
                    return Err(TooOld);
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.res == res && ns.is_none_or(|n| e.namespace == n))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart { initial, rx })
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

fn list_in(objects: &BTreeMap<ObjKey, Value>, res: &str, ns: Option<&str>) -> Vec<Value> {
    let start = (res.to_string(), ns.unwrap_or("").to_string(), String::new());
    objects
        .range(start..)
        .take_while(|((r, n, _), _)| r == res && ns.is_none_or(|ns| n == ns))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Exclusive access to the store; every change bumps the resourceVersion and is broadcast.
pub struct Txn<'a> {
    inner: &'a mut Inner,
    events: &'a broadcast::Sender<Arc<Event>>,
}

impl Txn<'_> {
    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<&Value> {
        self.inner
            .objects
            .get(&(res.to_string(), ns.to_string(), name.to_string()))
    }

    pub fn list(&self, res: &str, ns: Option<&str>) -> Vec<Value> {
        list_in(&self.inner.objects, res, ns)
    }

    fn next_rv(&mut self) -> u64 {
        self.inner.rv += 1;
        self.inner.rv
    }

    fn emit(&mut self, kind: EventType, res: &str, object: Value) {
        let event = Arc::new(Event {
            kind,
            res: res.to_string(),
            namespace: meta_str(&object, "namespace").to_string(),
            rv: self.inner.rv,
            object,
        });
        if self.inner.history.len() >= HISTORY {
            self.inner.history.pop_front();
        }
        self.inner.history.push_back(event.clone());
        // No receivers is normal (nobody watching).
        let _ = self.events.send(event);
    }

    /// Stores a new object, filling in the server-owned metadata.
    pub fn create(&mut self, res: &str, mut obj: Value) -> Result<Value, StoreError> {
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            return Err(StoreError::Invalid(
                "name or generateName is required".into(),
            ));
        }
        let key = (res.to_string(), ns, name);
        if self.inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        let rv = self.next_rv();
        let meta = obj
            .as_object_mut()
            .ok_or_else(|| StoreError::Invalid("object must be a JSON object".into()))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!(now_rfc3339()));
            if meta.get("creationTimestamp").is_some_and(Value::is_null) {
                meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            }
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
        }
        self.inner.objects.insert(key, obj.clone());
        self.emit(EventType::Added, res, obj.clone());
        Ok(obj)
    }

    /// Replaces an existing object. A non-empty `metadata.resourceVersion` must match the stored
    /// one (optimistic concurrency, as the apiserver does); uid and creationTimestamp are kept.
    pub fn update(&mut self, res: &str, mut obj: Value) -> Result<Value, StoreError> {
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let key = (res.to_string(), ns, name);
        let Some(old) = self.inner.objects.get(&key) else {
            return Err(StoreError::NotFound);
        };
        let given_rv = meta_str(&obj, "resourceVersion");
        if !given_rv.is_empty() && given_rv != meta_str(old, "resourceVersion") {
            return Err(StoreError::Conflict);
        }
        let spec_changed = old.get("spec") != obj.get("spec");
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if old == &obj {
            return Ok(obj);
        }
        let rv = self.next_rv();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["uid", "creationTimestamp"] {
                if let Some(v) = old_meta.get(field) {
                    meta.insert(field.into(), v.clone());
                }
            }
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            let generation = if spec_changed {
                generation + 1
            } else {
                generation
            };
            meta.insert("generation".into(), json!(generation));
        }
        self.inner.objects.insert(key, obj.clone());
        self.emit(EventType::Modified, res, obj.clone());
        Ok(obj)
    }

    pub fn delete(&mut self, res: &str, ns: &str, name: &str) -> Result<Value, StoreError> {
        let key = (res.to_string(), ns.to_string(), name.to_string());
        let Some(mut obj) = self.inner.objects.remove(&key) else {
            return Err(StoreError::NotFound);
        };
        let rv = self.next_rv();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.emit(EventType::Deleted, res, obj.clone());
        Ok(obj)
    }

    /// Removes every object in namespace `ns` (of any resource), as namespace deletion does.
    pub fn delete_namespace_contents(&mut self, ns: &str) {
        let keys: Vec<ObjKey> = self
            .inner
            .objects
            .keys()
            .filter(|(_, n, _)| n == ns)
            .cloned()
            .collect();
        for (res, n, name) in keys {
            let _ = self.delete(&res, &n, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"namespace":ns},"spec":{"x":1}})
    }

    #[test]
    fn create_get_list_update_delete() {
        let store = Store::new();
        let created = store.write(|t| t.create("/pods", pod("dev", "a"))).unwrap();
        assert!(created["metadata"]["uid"].is_string());
        assert_eq!(created["metadata"]["generation"], 1);
        store
            .write(|t| t.create("/pods", pod("prod", "b")))
            .unwrap();
        assert_eq!(
            store.write(|t| t.create("/pods", pod("dev", "a"))),
            Err(StoreError::AlreadyExists)
        );
        assert_eq!(store.list("/pods", None).0.len(), 2);
        assert_eq!(store.list("/pods", Some("dev")).0.len(), 1);
        assert_eq!(store.list("/pods", Some("de")).0.len(), 0);
        assert_eq!(store.list("/services", None).0.len(), 0);

        let mut changed = created.clone();
        changed["spec"]["x"] = json!(2);
        let updated = store.write(|t| t.update("/pods", changed.clone())).unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        // The same stale resourceVersion again is a conflict.
        assert_eq!(
            store.write(|t| t.update("/pods", changed)),
            Err(StoreError::Conflict)
        );

        let rv_before = store.resource_version();
        store.write(|t| t.delete("/pods", "dev", "a")).unwrap();
        assert!(store.resource_version() > rv_before);
        assert!(store.get("/pods", "dev", "a").is_none());
        assert_eq!(
            store.write(|t| t.delete("/pods", "dev", "a")),
            Err(StoreError::NotFound)
        );
    }

    #[test]
    fn watch_replays_history_and_gets_live_events() {
        let store = Store::new();
        store.write(|t| t.create("/pods", pod("dev", "a"))).unwrap();
        let rv = store.resource_version();
        store.write(|t| t.create("/pods", pod("dev", "b"))).unwrap();
        let mut start = store.watch("/pods", Some("dev"), Some(rv)).unwrap();
        assert_eq!(start.initial.len(), 1);
        assert_eq!(start.initial[0].object["metadata"]["name"], "b");
        store.write(|t| t.delete("/pods", "dev", "a")).unwrap();
        let ev = start.rx.try_recv().unwrap();
        assert_eq!(ev.kind, EventType::Deleted);

        let all = store.watch("/pods", None, None).unwrap();
        assert_eq!(all.initial.len(), 1);
        assert_eq!(all.initial[0].kind, EventType::Added);
    }
}
