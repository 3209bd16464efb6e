//! The objects a fresh sandbox starts with (listed in the module documentation of `mod.rs`).
//!
//! Everything goes through the same controllers as client requests, so seeded deployments own
//! real replicasets and pods. Creation times are set in the past so AGE columns look lived-in.

use serde_json::{json, Value};

use super::controller::{self, NODE_IP, NODE_NAME};
use super::discovery::fnv64;
use super::store::{Store, Txn};

fn ago(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn put(txn: &mut Txn<'_>, res: &str, obj: Value) {
    if let Err(err) = controller::create(txn, res, obj) {
        tracing::warn!("sandbox seed of {res} failed: {err}");
    }
}

fn namespace(name: &str, age: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "creationTimestamp": ago(age)}})
}

fn deployment(ns: &str, name: &str, image: &str, replicas: u64, port: u64, age: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "creationTimestamp": ago(age),
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": if name == "web" { "frontend" } else { "backend" }}},
                "spec": {"containers": [{
                    "name": name,
                    "image": image,
                    "ports": [{"containerPort": port, "protocol": "TCP"}],
                    "env": [{"name": "APP_ENV", "value": ns}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }]},
            },
        },
    })
}

fn service(ns: &str, name: &str, port: u64, target: u64, ty: &str, age: i64) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "creationTimestamp": ago(age)},
        "spec": {"type": ty, "selector": {"app": name},
                 "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}]},
    });
    if ty == "LoadBalancer" {
        svc["spec"]["ports"][0]["nodePort"] = json!(31080);
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}});
    }
    svc
}

fn configmap(ns: &str, name: &str, data: Value, age: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns, "creationTimestamp": ago(age)}, "data": data})
}

fn secret(ns: &str, name: &str, ty: &str, string_data: Value, age: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
           "metadata": {"name": name, "namespace": ns, "creationTimestamp": ago(age)}, "stringData": string_data})
}

fn static_pod(name: &str, component: &str, image: &str, age: i64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{name}-{NODE_NAME}"), "namespace": "kube-system",
                     "labels": {"component": component, "tier": "control-plane"}, "creationTimestamp": ago(age),
                     // The kubelet's mirror of a static pod (manifest in /etc/kubernetes/manifests).
                     "annotations": {"kubernetes.io/config.mirror": format!("{:032x}", u128::from(fnv64(name.as_bytes()))),
                                     "kubernetes.io/config.hash": format!("{:032x}", u128::from(fnv64(name.as_bytes()))),
                                     "kubernetes.io/config.source": "file"}},
        "spec": {"nodeName": NODE_NAME, "hostNetwork": true, "priorityClassName": "system-node-critical",
                 "containers": [{"name": name, "image": image}]},
    })
}

pub fn seed(store: &Store) {
    store.write(|txn| {
        for (ns, age) in [("default", 30 * DAY), ("kube-system", 30 * DAY), ("dev", 12 * DAY), ("prod", 12 * DAY)] {
            put(txn, "/namespaces", namespace(ns, age));
        }
        put(
            txn,
            "/nodes",
            json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE_NAME, "creationTimestamp": ago(30 * DAY), "labels": {
                    "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/control-plane": ""}},
                "spec": {"podCIDR": "10.244.0.0/16"},
                "status": {
                    "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "15Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "kubelet is posting ready status", "lastHeartbeatTime": ago(10), "lastTransitionTime": ago(30 * DAY)}],
                    "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0", "osImage": "Ubuntu 24.04 LTS",
                                 "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.22",
                                 "operatingSystem": "linux", "architecture": "amd64"},
                },
            }),
        );
        put(txn, "/services", json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}, "creationTimestamp": ago(30 * DAY)},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443, "protocol": "TCP"}]},
        }));

        for (name, component, image) in [
            ("etcd", "etcd", "registry.k8s.io/etcd:3.5.16-0"),
            ("kube-apiserver", "kube-apiserver", "registry.k8s.io/kube-apiserver:v1.32.0"),
            ("kube-controller-manager", "kube-controller-manager", "registry.k8s.io/kube-controller-manager:v1.32.0"),
            ("kube-scheduler", "kube-scheduler", "registry.k8s.io/kube-scheduler:v1.32.0"),
        ] {
            put(txn, "/pods", static_pod(name, component, image, 30 * DAY));
        }
        put(txn, "apps/deployments", deployment("kube-system", "coredns", "registry.k8s.io/coredns/coredns:v1.11.3", 2, 53, 30 * DAY));
        put(txn, "/services", service("kube-system", "kube-dns", 53, 53, "ClusterIP", 30 * DAY));

        for (ns, web_replicas, api_replicas, web_ty) in [("dev", 2, 1, "ClusterIP"), ("prod", 3, 2, "LoadBalancer")] {
            put(txn, "apps/deployments", deployment(ns, "web", "nginx:1.25.3", web_replicas, 80, 5 * DAY));
            put(txn, "apps/deployments", deployment(ns, "api", "ghcr.io/acme/api:1.4.2", api_replicas, 8080, 3 * DAY + 4 * HOUR));
            put(txn, "/services", service(ns, "web", 80, 80, web_ty, 5 * DAY));
            put(txn, "/services", service(ns, "api", 8080, 8080, "ClusterIP", 3 * DAY));
            put(
                txn,
                "/configmaps",
                configmap(ns, "app-config", json!({"LOG_LEVEL": if ns == "prod" { "info" } else { "debug" },
                    "FEATURE_FLAGS": "search,checkout", "app.properties": "cache.size=128\nretries=3\n"}), 5 * DAY),
            );
            put(
                txn,
                "/secrets",
                secret(ns, "db-credentials", "Opaque", json!({"username": format!("app_{ns}"), "password": format!("s3cr3t-{ns}-pw")}), 5 * DAY),
            );
        }
        put(
            txn,
            "/pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "debug-shell", "namespace": "dev", "labels": {"run": "debug-shell"}, "creationTimestamp": ago(2 * HOUR)},
                   "spec": {"containers": [{"name": "debug-shell", "image": "busybox:1.36", "command": ["sleep", "infinity"]}]}}),
        );
        // One pod with restarts, so RESTARTS is not always 0.
        if let Some(mut pod) = txn.list("/pods", Some("prod")).into_iter().find(|p| p["metadata"]["labels"]["app"] == "api") {
            pod["status"]["containerStatuses"][0]["restartCount"] = json!(3);
            pod["status"]["containerStatuses"][0]["lastState"] =
                json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": ago(DAY), "finishedAt": ago(7 * HOUR)}});
            let _ = txn.update("/pods", pod);
        }
    });
}
