//! Server-side printing: `meta.k8s.io/v1` Tables, as the apiserver returns to `kubectl get`.
//!
//! Columns with `priority > 0` are the ones kubectl shows only with `-o wide`; the server always
//! sends them. The NAMESPACE column of `-A` is added by kubectl from each row's object metadata.

use serde_json::{json, Value};

use super::discovery::ResourceInfo;

/// What a row's `object` holds (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Kubernetes' `duration.HumanDuration`, used for AGE.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: time::OffsetDateTime) -> String {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
    match created {
        Some(t) => human_duration((now - t).whole_seconds()),
        None => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, format: &str, priority: i32, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn text<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn or_none(v: Option<&str>) -> String {
    v.unwrap_or("<none>").to_string()
}

fn count(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn len_of(obj: &Value, field: &str) -> usize {
    match obj.get(field) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn pod_status(pod: &Value) -> String {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for cs in statuses.into_iter().flatten() {
        if let Some(reason) =
            text(cs, "/state/waiting/reason").or_else(|| text(cs, "/state/terminated/reason"))
        {
            return reason.into();
        }
    }
    text(pod, "/status/reason")
        .or_else(|| text(pod, "/status/phase"))
        .unwrap_or("Pending")
        .into()
}

fn label_selector_text(sel: Option<&Value>) -> String {
    let Some(Value::Object(m)) = sel else {
        return "<none>".into();
    };
    if m.is_empty() {
        return "<none>".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

fn containers_of(spec: Option<&Value>, field: &str) -> String {
    let names: Vec<&str> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get(field).and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "<none>".into()
    } else {
        names.join(",")
    }
}

/// Column definitions and a row-cell function for one resource.
type CellFn = fn(&Value, time::OffsetDateTime) -> Vec<Value>;

fn columns_for(res: &ResourceInfo) -> (Vec<Value>, CellFn) {
    let name = || {
        col(
            "Name",
            "string",
            "name",
            0,
            "Name must be unique within a namespace.",
        )
    };
    let age_col = || {
        col("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")
    };
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => (
            vec![
                name(),
                col("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
                col("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
                col("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
                age_col(),
                col("IP", "string", "", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
                col("Node", "string", "", 1, "NodeName is a request to schedule this pod onto a specific node."),
                col("Nominated Node", "string", "", 1, "nominatedNodeName is set when this pod preempts other pods on the node."),
                col("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
            ],
            |o, now| {
                let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
                let statuses = o.pointer("/status/containerStatuses").and_then(Value::as_array);
                let ready = statuses
                    .into_iter()
                    .flatten()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count();
                let restarts: i64 = statuses
                    .into_iter()
                    .flatten()
                    .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
                    .sum();
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts.to_string()),
                    json!(age(o, now)),
                    json!(or_none(text(o, "/status/podIP"))),
                    json!(or_none(text(o, "/spec/nodeName"))),
                    json!(or_none(text(o, "/status/nominatedNodeName"))),
                    json!("<none>"),
                ]
            },
        ),
        ("apps", "Deployment") => (
            vec![
                name(),
                col("Ready", "string", "", 0, "Number of the pod with ready state"),
                col("Up-to-date", "integer", "", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                col("Available", "integer", "", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                age_col(),
                col("Containers", "string", "", 1, "Names of each container in the template."),
                col("Images", "string", "", 1, "Images referenced by each container in the template."),
                col("Selector", "string", "", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
            ],
            |o, now| {
                let spec = o.pointer("/spec/template/spec");
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(format!("{}/{}", count(o, "/status/readyReplicas"), o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1))),
                    json!(count(o, "/status/updatedReplicas")),
                    json!(count(o, "/status/availableReplicas")),
                    json!(age(o, now)),
                    json!(containers_of(spec, "name")),
                    json!(containers_of(spec, "image")),
                    json!(label_selector_text(o.pointer("/spec/selector/matchLabels"))),
                ]
            },
        ),
        ("apps", "ReplicaSet") => (
            vec![
                name(),
                col("Desired", "integer", "", 0, "Number of desired pods."),
                col("Current", "integer", "", 0, "Number of actual replicas."),
                col("Ready", "integer", "", 0, "Number of ready replicas."),
                age_col(),
                col("Containers", "string", "", 1, "Names of each container in the template."),
                col("Images", "string", "", 1, "Images referenced by each container in the template."),
                col("Selector", "string", "", 1, "Label selector for pods."),
            ],
            |o, now| {
                let spec = o.pointer("/spec/template/spec");
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
                    json!(count(o, "/status/replicas")),
                    json!(count(o, "/status/readyReplicas")),
                    json!(age(o, now)),
                    json!(containers_of(spec, "name")),
                    json!(containers_of(spec, "image")),
                    json!(label_selector_text(o.pointer("/spec/selector/matchLabels"))),
                ]
            },
        ),
        ("", "Service") => (
            vec![
                name(),
                col("Type", "string", "", 0, "The type of service."),
                col("Cluster-IP", "string", "", 0, "The cluster IP of the service."),
                col("External-IP", "string", "", 0, "The external IP of the service."),
                col("Port(s)", "string", "", 0, "The ports of the service."),
                age_col(),
                col("Selector", "string", "", 1, "Route service traffic to pods with label keys and values matching this selector."),
            ],
            |o, now| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        match p.get("nodePort").and_then(Value::as_i64) {
                            Some(np) => format!("{port}:{np}/{proto}"),
                            None => format!("{port}/{proto}"),
                        }
                    })
                    .collect();
                let ty = text(o, "/spec/type").unwrap_or("ClusterIP");
                let external = o
                    .pointer("/status/loadBalancer/ingress/0/ip")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| if ty == "LoadBalancer" { "<pending>".into() } else { "<none>".into() });
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(ty),
                    json!(or_none(text(o, "/spec/clusterIP"))),
                    json!(external),
                    json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
                    json!(age(o, now)),
                    json!(label_selector_text(o.pointer("/spec/selector"))),
                ]
            },
        ),
        ("", "ConfigMap") => (
            vec![name(), col("Data", "integer", "", 0, "Number of data entries."), age_col()],
            |o, now| {
                let n = len_of(o, "data") + len_of(o, "binaryData");
                vec![json!(text(o, "/metadata/name").unwrap_or_default()), json!(n), json!(age(o, now))]
            },
        ),
        ("", "Secret") => (
            vec![
                name(),
                col("Type", "string", "", 0, "The type of the secret."),
                col("Data", "integer", "", 0, "Number of data entries."),
                age_col(),
            ],
            |o, now| {
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(text(o, "/type").unwrap_or("Opaque")),
                    json!(len_of(o, "data")),
                    json!(age(o, now)),
                ]
            },
        ),
        ("", "Namespace") => (
            vec![name(), col("Status", "string", "", 0, "The status of the namespace."), age_col()],
            |o, now| {
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(text(o, "/status/phase").unwrap_or("Active")),
                    json!(age(o, now)),
                ]
            },
        ),
        ("", "Node") => (
            vec![
                name(),
                col("Status", "string", "", 0, "The status of the node."),
                col("Roles", "string", "", 0, "The roles of the node."),
                age_col(),
                col("Version", "string", "", 0, "Kubelet Version reported by the node."),
                col("Internal-IP", "string", "", 1, "List of addresses reachable to the node."),
                col("External-IP", "string", "", 1, "List of addresses reachable to the node."),
                col("OS-Image", "string", "", 1, "OS Image reported by the node."),
                col("Kernel-Version", "string", "", 1, "Kernel Version reported by the node."),
                col("Container-Runtime", "string", "", 1, "Container Runtime Version reported by the node."),
            ],
            |o, now| {
                let ready = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let mut roles: Vec<&str> = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                    .collect();
                roles.sort_unstable();
                let addr = |ty: &str| {
                    o.pointer("/status/addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|a| a["type"] == ty)
                        .and_then(|a| a["address"].as_str())
                        .unwrap_or("<none>")
                        .to_string()
                };
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    json!(if ready { "Ready" } else { "NotReady" }),
                    json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
                    json!(age(o, now)),
                    json!(text(o, "/status/nodeInfo/kubeletVersion").unwrap_or_default()),
                    json!(addr("InternalIP")),
                    json!(addr("ExternalIP")),
                    json!(or_none(text(o, "/status/nodeInfo/osImage"))),
                    json!(or_none(text(o, "/status/nodeInfo/kernelVersion"))),
                    json!(or_none(text(o, "/status/nodeInfo/containerRuntimeVersion"))),
                ]
            },
        ),
        _ => (
            // The apiserver's default table convertor.
            vec![name(), col("Created At", "date", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")],
            |o, _| {
                vec![
                    json!(text(o, "/metadata/name").unwrap_or_default()),
                    o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
                ]
            },
        ),
    }
}

pub fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// A Table of `objects`. `with_columns` is false for watch events after the first, as the
/// apiserver sends column definitions only once per watch.
pub fn to_table(
    res: &ResourceInfo,
    objects: &[Value],
    include: IncludeObject,
    resource_version: &str,
    with_columns: bool,
) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let (columns, cells) = columns_for(res);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(o, now), "object": row_object(o, include)});
            if include == IncludeObject::None {
                if let Some(m) = row.as_object_mut() {
                    m.remove("object");
                }
            }
            row
        })
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": if with_columns { json!(columns) } else { json!([]) },
        "rows": rows,
    });
    if !with_columns {
        if let Some(m) = table.as_object_mut() {
            m.remove("columnDefinitions");
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::discovery::Discovery;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3600 * 3 + 60), "3h1m");
        assert_eq!(human_duration(3600 * 30), "30h");
        assert_eq!(human_duration(3600 * 24 * 3 + 3600), "3d1h");
        assert_eq!(human_duration(3600 * 24 * 100), "100d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn pod_table() {
        let d = Discovery::load();
        let res = d.find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "dev", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2}, {"name": "b", "ready": false, "restartCount": 1}]}
        });
        let t = to_table(res, &[pod], IncludeObject::Metadata, "42", true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(&cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let row = &t["rows"][0];
        assert_eq!(row["cells"][1], "1/2");
        assert_eq!(row["cells"][2], "Running");
        assert_eq!(row["cells"][3], "3");
        assert_eq!(row["cells"][5], "10.0.0.5");
        assert_eq!(row["cells"][6], "node-1");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "dev");
        assert!(row["object"].get("spec").is_none());
    }

    #[test]
    fn other_tables() {
        let d = Discovery::load();
        let deploy = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = to_table(
            d.find("apps", "v1", "deployments").unwrap(),
            &[deploy],
            IncludeObject::Object,
            "1",
            true,
        );
        assert_eq!(t["rows"][0]["cells"][1], "2/3");
        assert_eq!(t["rows"][0]["cells"][2], 3);
        assert_eq!(t["rows"][0]["cells"][6], "nginx");
        assert_eq!(t["rows"][0]["object"]["spec"]["replicas"], 3);

        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let t = to_table(
            d.find("", "v1", "services").unwrap(),
            &[svc],
            IncludeObject::Metadata,
            "1",
            true,
        );
        assert_eq!(t["rows"][0]["cells"][4], "80:30080/TCP,53/UDP");
        assert_eq!(t["rows"][0]["cells"][3], "<none>");

        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "YQ==", "b": "Yg=="}});
        let t = to_table(
            d.find("", "v1", "secrets").unwrap(),
            &[secret],
            IncludeObject::None,
            "1",
            false,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["s", "Opaque", 2, "<unknown>"])
        );
        assert!(t.get("columnDefinitions").is_none());
        assert!(t["rows"][0].get("object").is_none());

        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        let t = to_table(
            d.find("rbac.authorization.k8s.io", "v1", "roles").unwrap(),
            &[role],
            IncludeObject::Metadata,
            "1",
            true,
        );
        assert_eq!(t["columnDefinitions"][1]["name"], "Created At");
        assert_eq!(t["rows"][0]["cells"][1], "2020-01-01T00:00:00Z");
    }
}
