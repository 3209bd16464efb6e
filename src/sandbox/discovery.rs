//! API discovery and OpenAPI, all derived from the real `APIResourceList` documents embedded
//! from `discovery/` so that `/apis`, `/apis/<g>/<v>`, aggregated discovery and `/openapi/v3`
//! can never disagree about what the sandbox serves.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::openapi_schema;

/// `(group/version, APIResourceList JSON)`; the core group is `v1`.
const FIXTURES: &[(&str, &str)] = &[
    ("v1", include_str!("discovery/api__v1.json")),
    (
        "apiregistration.k8s.io/v1",
        include_str!("discovery/apis__apiregistration.k8s.io__v1.json"),
    ),
    ("apps/v1", include_str!("discovery/apis__apps__v1.json")),
    (
        "events.k8s.io/v1",
        include_str!("discovery/apis__events.k8s.io__v1.json"),
    ),
    (
        "authentication.k8s.io/v1",
        include_str!("discovery/apis__authentication.k8s.io__v1.json"),
    ),
    (
        "authorization.k8s.io/v1",
        include_str!("discovery/apis__authorization.k8s.io__v1.json"),
    ),
    // v2 first: the preferred version comes first, as in the real /apis.
    (
        "autoscaling/v2",
        include_str!("discovery/apis__autoscaling__v2.json"),
    ),
    (
        "autoscaling/v1",
        include_str!("discovery/apis__autoscaling__v1.json"),
    ),
    ("batch/v1", include_str!("discovery/apis__batch__v1.json")),
    (
        "certificates.k8s.io/v1",
        include_str!("discovery/apis__certificates.k8s.io__v1.json"),
    ),
    (
        "networking.k8s.io/v1",
        include_str!("discovery/apis__networking.k8s.io__v1.json"),
    ),
    ("policy/v1", include_str!("discovery/apis__policy__v1.json")),
    (
        "rbac.authorization.k8s.io/v1",
        include_str!("discovery/apis__rbac.authorization.k8s.io__v1.json"),
    ),
    (
        "storage.k8s.io/v1",
        include_str!("discovery/apis__storage.k8s.io__v1.json"),
    ),
    (
        "admissionregistration.k8s.io/v1",
        include_str!("discovery/apis__admissionregistration.k8s.io__v1.json"),
    ),
    (
        "apiextensions.k8s.io/v1",
        include_str!("discovery/apis__apiextensions.k8s.io__v1.json"),
    ),
    (
        "scheduling.k8s.io/v1",
        include_str!("discovery/apis__scheduling.k8s.io__v1.json"),
    ),
    (
        "coordination.k8s.io/v1",
        include_str!("discovery/apis__coordination.k8s.io__v1.json"),
    ),
    (
        "node.k8s.io/v1",
        include_str!("discovery/apis__node.k8s.io__v1.json"),
    ),
    (
        "discovery.k8s.io/v1",
        include_str!("discovery/apis__discovery.k8s.io__v1.json"),
    ),
    (
        "flowcontrol.apiserver.k8s.io/v1",
        include_str!("discovery/apis__flowcontrol.apiserver.k8s.io__v1.json"),
    ),
    // An aggregated API (metrics-server behind an APIService): listed last, as the aggregator
    // orders local groups before aggregated ones.
    (
        "metrics.k8s.io/v1beta1",
        include_str!("discovery/apis__metrics.k8s.io__v1beta1.json"),
    ),
];

pub const AGGREGATED_V2_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

#[derive(Debug, Clone)]
pub struct Subresource {
    pub name: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

/// One top-level resource of one group-version.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    /// Plural name, e.g. `deployments`.
    pub name: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<Subresource>,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key: versions of one group share storage, as in etcd.
    pub fn store_key(&self) -> String {
        super::store::res_key(&self.group, &self.name)
    }

    /// `pods`, `deployments.apps`: how the apiserver names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// The component schema name in OpenAPI, in the apiserver's style.
    pub fn schema_name(&self) -> String {
        let short = if self.group.is_empty() {
            "core"
        } else {
            self.group.split('.').next().unwrap_or("core")
        };
        format!("io.k8s.api.{short}.{}.{}", self.version, self.kind)
    }
}

struct GroupInfo {
    name: String,
    versions: Vec<String>,
}

pub struct Discovery {
    pub resources: Vec<ResourceInfo>,
    groups: Vec<GroupInfo>,
    resource_lists: HashMap<String, Value>,
    openapi_docs: HashMap<String, Value>,
    openapi_root: Value,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Discovery {
    pub fn load() -> Discovery {
        let mut resources = Vec::new();
        let mut groups: Vec<GroupInfo> = Vec::new();
        let mut resource_lists = HashMap::new();
        for (gv, text) in FIXTURES {
            // The fixtures are compiled in and covered by tests; a broken one is a build bug.
            let mut doc: Value =
                serde_json::from_str(text).expect("embedded discovery fixture is valid JSON");
            let (group, version) = gv.split_once('/').unwrap_or(("", gv));
            doc["apiVersion"] = json!("v1");
            doc["kind"] = json!("APIResourceList");
            doc["groupVersion"] = json!(gv);
            let entries = doc["resources"].as_array().cloned().unwrap_or_default();
            let mut here: Vec<ResourceInfo> = Vec::new();
            for r in &entries {
                let name = r["name"].as_str().unwrap_or_default().to_string();
                if let Some((parent, sub)) = name.split_once('/') {
                    if let Some(p) = here.iter_mut().find(|p| p.name == parent) {
                        p.subresources.push(Subresource {
                            name: sub.to_string(),
                            group: r["group"].as_str().unwrap_or(group).to_string(),
                            version: r["version"].as_str().unwrap_or(version).to_string(),
                            kind: r["kind"].as_str().unwrap_or_default().to_string(),
                            verbs: strings(r.get("verbs")),
                        });
                    }
                    continue;
                }
                here.push(ResourceInfo {
                    group: group.to_string(),
                    version: version.to_string(),
                    // Empty where the server says so (metrics-server), as aggregated
                    // discovery then reports it.
                    singular: r["singularName"].as_str().unwrap_or_default().to_string(),
                    name,
                    kind: r["kind"].as_str().unwrap_or_default().to_string(),
                    namespaced: r["namespaced"].as_bool().unwrap_or(false),
                    verbs: strings(r.get("verbs")),
                    short_names: strings(r.get("shortNames")),
                    categories: strings(r.get("categories")),
                    subresources: Vec::new(),
                });
            }
            resources.extend(here);
            if !group.is_empty() {
                match groups.iter_mut().find(|g| g.name == group) {
                    Some(g) => g.versions.push(version.to_string()),
                    None => groups.push(GroupInfo {
                        name: group.to_string(),
                        versions: vec![version.to_string()],
                    }),
                }
            }
            resource_lists.insert(gv.to_string(), doc);
        }
        let mut d = Discovery {
            resources,
            groups,
            resource_lists,
            openapi_docs: HashMap::new(),
            openapi_root: Value::Null,
        };
        d.build_openapi();
        d
    }

    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.name == resource)
    }

    pub fn api_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_json(&self, g: &GroupInfo) -> Value {
        let versions: Vec<Value> = g
            .versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{}/{v}", g.name), "version": v}))
            .collect();
        json!({
            "name": g.name,
            "versions": versions,
            "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        })
    }

    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self.groups.iter().map(|g| self.group_json(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    pub fn api_group(&self, name: &str) -> Option<Value> {
        let g = self.groups.iter().find(|g| g.name == name)?;
        let mut v = self.group_json(g);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        Some(v)
    }

    pub fn resource_list(&self, gv: &str) -> Option<&Value> {
        self.resource_lists.get(gv)
    }

    fn aggregated_version(&self, group: &str, version: &str) -> Value {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| {
                let mut e = json!({
                    "resource": r.name,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs,
                });
                if !r.short_names.is_empty() {
                    e["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    e["categories"] = json!(r.categories);
                }
                if !r.subresources.is_empty() {
                    e["subresources"] = r
                        .subresources
                        .iter()
                        .map(|s| {
                            json!({
                                "subresource": s.name,
                                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                                "verbs": s.verbs,
                            })
                        })
                        .collect();
                }
                e
            })
            .collect();
        json!({"version": version, "resources": resources, "freshness": "Current"})
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let items: Vec<Value> = if core {
            vec![
                json!({"metadata": {"creationTimestamp": null}, "versions": [self.aggregated_version("", "v1")]}),
            ]
        } else {
            self.groups
                .iter()
                .map(|g| {
                    let versions: Vec<Value> =
                        g.versions.iter().map(|v| self.aggregated_version(&g.name, v)).collect();
                    json!({"metadata": {"name": g.name, "creationTimestamp": null}, "versions": versions})
                })
                .collect()
        };
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }

    /// The `/openapi/v3` path key of a group-version: `api/v1`, `apis/apps/v1`.
    fn openapi_key(group: &str, version: &str) -> String {
        if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        }
    }

    /// Builds one OpenAPI v3 document per group-version. kubectl reads them for two things:
    /// whether PATCH/POST accept `fieldValidation` (so `apply --validate=strict` leaves validation
    /// to the server), and the kind's schema for computing strategic merge patches.
    fn build_openapi(&mut self) {
        let mut docs: HashMap<String, Value> = HashMap::new();
        for r in &self.resources {
            let key = Self::openapi_key(&r.group, &r.version);
            let doc = docs.entry(key.clone()).or_insert_with(|| {
                json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": "v1.32.0-ztk-sandbox"},
                    "paths": {},
                    "components": {"schemas": openapi_schema::common_schemas()},
                })
            });
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let schema_ref = json!({"$ref": format!("#/components/schemas/{}", r.schema_name())});
            let op = |action: &str, params: &[&str]| {
                let parameters: Vec<Value> = params
                    .iter()
                    .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
                    .collect();
                json!({
                    "operationId": format!("{action}{}{}", r.api_version().replace(['/', '.'], ""), r.kind),
                    "parameters": parameters,
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
                    "x-kubernetes-action": action,
                    "x-kubernetes-group-version-kind": gvk,
                })
            };
            let base = if r.namespaced {
                format!("/{key}/namespaces/{{namespace}}/{}", r.name)
            } else {
                format!("/{key}/{}", r.name)
            };
            let write_params = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
            let mut collection = serde_json::Map::new();
            let mut item = serde_json::Map::new();
            if r.has_verb("list") {
                collection.insert(
                    "get".into(),
                    op("list", &["labelSelector", "fieldSelector", "watch"]),
                );
            }
            if r.has_verb("create") {
                collection.insert("post".into(), op("post", &write_params));
            }
            if r.has_verb("get") {
                item.insert("get".into(), op("get", &["pretty"]));
            }
            if r.has_verb("update") {
                item.insert("put".into(), op("put", &write_params));
            }
            if r.has_verb("patch") {
                item.insert(
                    "patch".into(),
                    op(
                        "patch",
                        &["dryRun", "fieldManager", "fieldValidation", "force"],
                    ),
                );
            }
            if r.has_verb("delete") {
                item.insert(
                    "delete".into(),
                    op("delete", &["dryRun", "propagationPolicy"]),
                );
            }
            if !collection.is_empty() {
                doc["paths"][&base] = Value::Object(collection);
            }
            if !item.is_empty() {
                doc["paths"][format!("{base}/{{name}}")] = Value::Object(item);
            }
            doc["components"]["schemas"][r.schema_name()] = openapi_schema::kind_schema(r);
        }
        let mut paths = serde_json::Map::new();
        for (key, doc) in &docs {
            let text = doc.to_string();
            // The hash only has to change when the document does: kubectl caches by it.
            let hash = fnv64(text.as_bytes());
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash:016X}")}),
            );
        }
        self.openapi_root = json!({"paths": paths});
        self.openapi_docs = docs;
    }

    pub fn openapi_root(&self) -> &Value {
        &self.openapi_root
    }

    /// `rest` is the part after `/openapi/v3/`, e.g. `apis/apps/v1`.
    pub fn openapi_doc(&self, rest: &str) -> Option<&Value> {
        self.openapi_docs.get(rest.trim_matches('/'))
    }
}

/// The media type of the protobuf OpenAPI v2 answer. Clients ask for `…spec.v2@v1.0+protobuf`,
/// but `@` is not valid in a Content-Type (Go's `mime` rejects it), so the apiserver answers
/// with `.v1.0`.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A minimal OpenAPI v2 document (gnostic `openapi_v2.Document`), protobuf-encoded: `swagger`
/// (field 1) and `info` (field 2: `title` = 1, `version` = 2), no definitions.
///
/// kubectl 1.27 downloads v2 for client-side validation and fails on a 404; newer versions
/// use v3. With no definitions, validation is skipped (left to the server, which advertises
/// `fieldValidation` in v3) and apply's patch falls back to kubectl's compiled-in types.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        // Every field here is shorter than 128 bytes, so the length is one varint byte.
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, b"v1.32.0-ztk-sandbox");
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    doc
}

/// FNV-1a, for stable short hashes (OpenAPI cache keys, pod-template-hash).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_list_matches_resource_lists() {
        let d = Discovery::load();
        let groups = d.api_group_list();
        for g in groups["groups"].as_array().unwrap() {
            for v in g["versions"].as_array().unwrap() {
                let gv = v["groupVersion"].as_str().unwrap();
                let list = d
                    .resource_list(gv)
                    .unwrap_or_else(|| panic!("{gv} not served"));
                assert_eq!(list["groupVersion"], gv);
            }
        }
        assert_eq!(
            d.api_group("autoscaling").unwrap()["preferredVersion"]["version"],
            "v2"
        );
    }

    #[test]
    fn aggregated_is_consistent_and_has_short_names() {
        let d = Discovery::load();
        let agg = d.aggregated(false);
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert!(deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "scale"));
        assert_eq!(
            agg["items"].as_array().unwrap().len(),
            d.api_group_list()["groups"].as_array().unwrap().len()
        );
        let core = d.aggregated(true);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["scope"], "Namespaced");
    }

    #[test]
    fn openapi_has_field_validation_on_patch() {
        let d = Discovery::load();
        let url = d.openapi_root()["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = d.openapi_doc("apis/apps/v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(
            d.openapi_doc("api/v1").unwrap()["paths"]["/api/v1/nodes/{name}"]["patch"].is_object()
        );
    }
}
