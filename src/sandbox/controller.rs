//! What the rest of a cluster would do to objects: apiserver defaulting (cluster IPs, secret
//! `stringData`), the scheduler and kubelet (every pod lands on the node and runs at once), the
//! deployment and replicaset controllers (pods from templates, status), and namespace and
//! owner cleanup on delete. All of it runs synchronously inside the write transaction, so a
//! client sees a settled state in the very response to its request.

use base64::Engine;
use serde_json::{json, Value};

use super::discovery::fnv64;
use super::store::{now_rfc3339, StoreError, Txn};

pub const NODE_NAME: &str = "sandbox-node-1";
pub const NODE_IP: &str = "10.0.0.10";

const PODS: &str = "/pods";
const NAMESPACES: &str = "/namespaces";
const DEPLOYMENTS: &str = "apps/deployments";
const REPLICASETS: &str = "apps/replicasets";

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no confusables).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn safe_encode(mut n: u64, len: usize) -> String {
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(SAFE_ALPHABET[(n % SAFE_ALPHABET.len() as u64) as usize] as char);
        n /= SAFE_ALPHABET.len() as u64;
    }
    out
}

fn ip_from(prefix: &str, seed: &str) -> String {
    let h = fnv64(seed.as_bytes());
    format!("{prefix}.{}.{}", (h % 250) + 1, ((h >> 8) % 250) + 2)
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Server-side defaults applied before an object is first stored.
pub fn default_on_create(res: &str, obj: &mut Value) {
    let ns = meta(obj, "namespace").to_string();
    let name = meta(obj, "name").to_string();
    match res {
        "/pods" => run_pod(obj),
        "/services" => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            if spec
                .get("clusterIP")
                .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
                && spec["type"] != "ExternalName"
            {
                let ip = ip_from("10.96", &format!("{ns}/{name}"));
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
                    }
                }
            }
            if obj.get("status").is_none() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        "/namespaces" => {
            obj["status"] = json!({"phase": "Active"});
            if obj.get("spec").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            let labels = &mut obj["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        "/secrets" => normalize_secret(obj),
        "apps/deployments" => {
            let spec = &mut obj["spec"];
            if spec.is_object() && spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.is_object() && spec.get("strategy").is_none() {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
            }
        }
        _ => {}
    }
}

/// Secrets are stored with `data` only: `stringData` is write-only, as in the apiserver.
pub fn normalize_secret(obj: &mut Value) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let plain = v.as_str().unwrap_or_default().to_string();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(plain));
        }
    }
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
}

/// The scheduler and kubelet in one step: the pod is bound to the node and all its containers run.
fn run_pod(pod: &mut Value) {
    let ns = meta(pod, "namespace").to_string();
    let name = meta(pod, "name").to_string();
    if !pod["spec"].is_object() {
        pod["spec"] = json!({});
    }
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        pod["spec"]["nodeName"] = json!(NODE_NAME);
    }
    for (field, default) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
    ] {
        if pod["spec"].get(field).is_none() {
            pod["spec"][field] = default;
        }
    }
    if pod.pointer("/status/phase").is_some() {
        return;
    }
    let started = meta(pod, "creationTimestamp");
    let started = if started.is_empty() {
        now_rfc3339()
    } else {
        started.to_string()
    };
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("main");
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            json!({
                "name": cname,
                "image": image,
                "imageID": format!("{image}@sha256:{:016x}{:016x}", fnv64(image.as_bytes()), fnv64(cname.as_bytes())),
                "containerID": format!("containerd://{:016x}{:016x}", fnv64(format!("{ns}/{name}/{cname}").as_bytes()), fnv64(name.as_bytes())),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
                "lastState": {},
            })
        })
        .collect();
    let ip = ip_from("10.244", &format!("{ns}/{name}"));
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": started});
    pod["status"] = json!({
        "phase": "Running",
        "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
}

/// Creates an object with defaults and runs the controllers it triggers.
pub fn create(txn: &mut Txn<'_>, res: &str, mut obj: Value) -> Result<Value, StoreError> {
    default_on_create(res, &mut obj);
    let created = txn.create(res, obj)?;
    after_write(txn, res, &created);
    Ok(current(txn, res, &created))
}

pub fn update(txn: &mut Txn<'_>, res: &str, mut obj: Value) -> Result<Value, StoreError> {
    if res == "/secrets" {
        normalize_secret(&mut obj);
    }
    if res == PODS {
        super::ephemeral::run_ephemeral(&mut obj);
    }
    let updated = txn.update(res, obj)?;
    after_write(txn, res, &updated);
    Ok(current(txn, res, &updated))
}

/// Deletes a pod the way watchers see it on a real cluster: first a MODIFIED event showing it
/// Terminating (deletionTimestamp set), then DELETED. Grace periods are not waited for.
fn delete_pod(txn: &mut Txn<'_>, ns: &str, name: &str) -> Result<Value, StoreError> {
    if let Some(mut pod) = txn.get(PODS, ns, name).cloned() {
        pod["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        txn.update(PODS, pod)?;
    }
    txn.delete(PODS, ns, name)
}

pub fn delete(txn: &mut Txn<'_>, res: &str, ns: &str, name: &str) -> Result<Value, StoreError> {
    let deleted = if res == PODS {
        delete_pod(txn, ns, name)?
    } else {
        txn.delete(res, ns, name)?
    };
    match res {
        NAMESPACES => txn.delete_namespace_contents(name),
        DEPLOYMENTS | REPLICASETS => delete_owned(txn, ns, meta(&deleted, "uid")),
        _ => {}
    }
    // A deleted pod of a replicaset is replaced, as the replicaset controller would.
    if res == PODS {
        if let Some(owner) = controller_owner(&deleted, "ReplicaSet") {
            if let Some(deploy) = txn
                .list(DEPLOYMENTS, Some(ns))
                .into_iter()
                .find(|d| owner.starts_with(&format!("{}-", meta(d, "name"))))
            {
                reconcile_deployment(txn, ns, meta(&deploy, "name"));
            }
        }
    }
    Ok(deleted)
}

fn current(txn: &Txn<'_>, res: &str, obj: &Value) -> Value {
    txn.get(res, meta(obj, "namespace"), meta(obj, "name"))
        .cloned()
        .unwrap_or_else(|| obj.clone())
}

fn after_write(txn: &mut Txn<'_>, res: &str, obj: &Value) {
    if res == DEPLOYMENTS {
        let (ns, name) = (
            meta(obj, "namespace").to_string(),
            meta(obj, "name").to_string(),
        );
        reconcile_deployment(txn, &ns, &name);
    }
}

fn controller_owner(obj: &Value, kind: &str) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|o| o["kind"] == kind)
        .and_then(|o| o["name"].as_str())
        .map(String::from)
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Garbage collection (background propagation): everything owned by `uid`, transitively.
fn delete_owned(txn: &mut Txn<'_>, ns: &str, uid: &str) {
    if uid.is_empty() {
        return;
    }
    for res in [REPLICASETS, PODS] {
        for obj in txn.list(res, Some(ns)) {
            if owned_by(&obj, uid) {
                let gone = if res == PODS {
                    delete_pod(txn, ns, meta(&obj, "name"))
                } else {
                    txn.delete(res, ns, meta(&obj, "name"))
                };
                if let Ok(gone) = gone {
                    delete_owned(txn, ns, meta(&gone, "uid"));
                }
            }
        }
    }
}

/// The `pod-template-hash` of a template.
pub fn template_hash(template: &Value) -> String {
    safe_encode(fnv64(template.to_string().as_bytes()), 10)
}

fn owner_ref(kind: &str, obj: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": meta(obj, "name"),
        "uid": meta(obj, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The deployment and replicaset controllers in one: one replicaset per template, `replicas`
/// running pods, and the deployment's status.
fn reconcile_deployment(txn: &mut Txn<'_>, ns: &str, name: &str) {
    let Some(deploy) = txn.get(DEPLOYMENTS, ns, name).cloned() else {
        return;
    };
    let replicas = deploy
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let template = deploy
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let rs_name = format!("{name}-{hash}");
    let deploy_uid = meta(&deploy, "uid").to_string();
    // Objects made on a deployment's first reconcile share its creation time (so seeded
    // objects look as old as their deployment); later rollouts and scale-ups are new.
    let first_reconcile = deploy.get("status").is_none();
    let birth = if first_reconcile {
        json!(meta(&deploy, "creationTimestamp"))
    } else {
        json!(now_rfc3339())
    };

    // Old replicasets (an older template) go away with their pods: a "Recreate" rollout.
    for rs in txn.list(REPLICASETS, Some(ns)) {
        if owned_by(&rs, &deploy_uid) && meta(&rs, "name") != rs_name {
            if let Ok(gone) = txn.delete(REPLICASETS, ns, meta(&rs, "name")) {
                delete_owned(txn, ns, meta(&gone, "uid"));
            }
        }
    }

    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    labels["pod-template-hash"] = json!(hash);
    let mut pod_template = template.clone();
    pod_template["metadata"]["labels"] = labels.clone();

    let rs = match txn.get(REPLICASETS, ns, &rs_name).cloned() {
        Some(rs) => rs,
        None => {
            let mut selector = deploy
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or_else(|| json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns, "labels": labels,
                    "ownerReferences": [owner_ref("Deployment", &deploy)],
                    "creationTimestamp": birth,
                },
                "spec": {"replicas": replicas, "selector": selector, "template": pod_template},
            });
            match txn.create(REPLICASETS, rs) {
                Ok(rs) => rs,
                Err(_) => return,
            }
        }
    };
    let rs_uid = meta(&rs, "uid").to_string();

    let mut pods: Vec<Value> = txn
        .list(PODS, Some(ns))
        .into_iter()
        .filter(|p| owned_by(p, &rs_uid))
        .collect();
    while pods.len() > replicas {
        if let Some(p) = pods.pop() {
            let _ = delete_pod(txn, ns, meta(&p, "name"));
        }
    }
    let mut attempt = 0u64;
    while pods.len() < replicas && attempt < 1000 {
        let suffix = safe_encode(fnv64(format!("{ns}/{rs_name}/{attempt}").as_bytes()), 5);
        attempt += 1;
        let pod_name = format!("{rs_name}-{suffix}");
        if txn.get(PODS, ns, &pod_name).is_some() {
            continue;
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": ns,
                "labels": pod_template["metadata"]["labels"],
                "ownerReferences": [owner_ref("ReplicaSet", &rs)],
                "generateName": format!("{rs_name}-"),
            },
            "spec": pod_template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        if birth.as_str().is_some_and(|b| !b.is_empty()) {
            pod["metadata"]["creationTimestamp"] = birth.clone();
        }
        default_on_create(PODS, &mut pod);
        match txn.create(PODS, pod) {
            Ok(p) => pods.push(p),
            Err(_) => break,
        }
    }

    let n = pods.len();
    let rs_status = json!({"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": n, "availableReplicas": n, "observedGeneration": rs["metadata"]["generation"]});
    if rs.get("status") != Some(&rs_status)
        || rs.pointer("/spec/replicas").and_then(Value::as_u64) != Some(replicas as u64)
    {
        let mut rs = rs.clone();
        rs["spec"]["replicas"] = json!(replicas);
        rs["status"] = rs_status;
        let _ = txn.update(REPLICASETS, rs);
    }

    let generation = deploy
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let since = deploy
        .pointer("/status/conditions/0/lastTransitionTime")
        .cloned()
        .unwrap_or_else(|| json!(now_rfc3339()));
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": since, "lastTransitionTime": since},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{rs_name}\" has successfully progressed."), "lastUpdateTime": since, "lastTransitionTime": since},
        ],
    });
    if n == 0 {
        // The apiserver omits zero counts.
        if let Some(m) = status.as_object_mut() {
            for k in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                m.remove(k);
            }
        }
    }
    if deploy.get("status") != Some(&status) {
        let mut d = deploy;
        d["status"] = status;
        let _ = txn.update(DEPLOYMENTS, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::store::Store;

    fn deployment(image: &str, replicas: u64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "dev"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn deployment_makes_pods_and_status() {
        let store = Store::new();
        let d = store
            .write(|t| create(t, DEPLOYMENTS, deployment("nginx:1", 2)))
            .unwrap();
        assert_eq!(d["status"]["readyReplicas"], 2);
        assert_eq!(d["status"]["observedGeneration"], 1);
        let pods = store.list(PODS, Some("dev")).0;
        assert_eq!(pods.len(), 2);
        let name = pods[0]["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 10 + 1 + 5,
            "{name}"
        );
        assert_eq!(pods[0]["metadata"]["labels"]["app"], "web");
        assert_eq!(pods[0]["status"]["phase"], "Running");

        // A new image rolls the pods; a scale-down removes some.
        let mut d2 = d.clone();
        d2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        d2["spec"]["replicas"] = json!(1);
        let d2 = store.write(|t| update(t, DEPLOYMENTS, d2)).unwrap();
        assert_eq!(d2["status"]["observedGeneration"], 2);
        let pods = store.list(PODS, Some("dev")).0;
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["spec"]["containers"][0]["image"], "nginx:2");
        assert_eq!(store.list(REPLICASETS, Some("dev")).0.len(), 1);

        // Deleting a pod gets it replaced; deleting the deployment removes everything.
        let pod_name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
        store.write(|t| delete(t, PODS, "dev", &pod_name)).unwrap();
        assert_eq!(store.list(PODS, Some("dev")).0.len(), 1);
        store
            .write(|t| delete(t, DEPLOYMENTS, "dev", "web"))
            .unwrap();
        assert!(store.list(PODS, Some("dev")).0.is_empty());
        assert!(store.list(REPLICASETS, Some("dev")).0.is_empty());
    }

    #[test]
    fn secret_string_data_and_service_ip() {
        let store = Store::new();
        let s = store
            .write(|t| create(t, "/secrets", json!({"metadata": {"name": "s", "namespace": "dev"}, "stringData": {"u": "admin"}})))
            .unwrap();
        assert_eq!(s["data"]["u"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
        let svc = store
            .write(|t| create(t, "/services", json!({"metadata": {"name": "web", "namespace": "dev"}, "spec": {"ports": [{"port": 80}]}})))
            .unwrap();
        assert!(svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    }

    #[test]
    fn namespace_delete_removes_contents() {
        let store = Store::new();
        store
            .write(|t| create(t, NAMESPACES, json!({"metadata": {"name": "tmp"}})))
            .unwrap();
        store.write(|t| create(t, PODS, json!({"metadata": {"name": "p", "namespace": "tmp"}, "spec": {"containers": [{"name": "c"}]}}))).unwrap();
        store.write(|t| delete(t, NAMESPACES, "", "tmp")).unwrap();
        assert!(store.list(PODS, None).0.is_empty());
    }
}
