//! OpenAPI v3 component schemas for the kinds people `kubectl apply`.
//!
//! kubectl (1.27+) computes the strategic merge patch of a client-side apply from the server's
//! OpenAPI v3 schema: it walks every map and list field of the manifest through the schema and
//! fails (falling back with a warning) on a field the schema does not describe. So the schemas
//! describe the structure (objects, lists, merge keys) of the common fields of the common kinds;
//! scalars are typed loosely since the sandbox does not validate values.

use serde_json::{json, Map, Value};

use super::discovery::ResourceInfo;

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn s() -> Value {
    json!({"type": "string"})
}

fn int() -> Value {
    json!({"type": "integer"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn int_or_string() -> Value {
    json!({"x-kubernetes-int-or-string": true})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn obj(fields: &[(&str, Value)]) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({"type": "object", "properties": props})
}

fn atomic_list(items: Value) -> Value {
    json!({"type": "array", "items": items, "x-kubernetes-list-type": "atomic"})
}

fn merge_list(items: Value, key: &str) -> Value {
    json!({
        "type": "array", "items": items,
        "x-kubernetes-patch-merge-key": key, "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-list-map-keys": [key], "x-kubernetes-list-type": "map",
    })
}

fn merge_set(items: Value) -> Value {
    json!({"type": "array", "items": items, "x-kubernetes-patch-strategy": "merge", "x-kubernetes-list-type": "set"})
}

fn selector() -> Value {
    obj(&[
        ("matchLabels", string_map()),
        (
            "matchExpressions",
            atomic_list(obj(&[
                ("key", s()),
                ("operator", s()),
                ("values", atomic_list(s())),
            ])),
        ),
    ])
}

fn key_ref() -> Value {
    obj(&[("name", s()), ("key", s()), ("optional", boolean())])
}

fn probe() -> Value {
    obj(&[
        ("exec", obj(&[("command", atomic_list(s()))])),
        (
            "httpGet",
            obj(&[
                ("path", s()),
                ("port", int_or_string()),
                ("host", s()),
                ("scheme", s()),
                (
                    "httpHeaders",
                    atomic_list(obj(&[("name", s()), ("value", s())])),
                ),
            ]),
        ),
        (
            "tcpSocket",
            obj(&[("port", int_or_string()), ("host", s())]),
        ),
        ("grpc", obj(&[("port", int()), ("service", s())])),
        ("initialDelaySeconds", int()),
        ("periodSeconds", int()),
        ("timeoutSeconds", int()),
        ("successThreshold", int()),
        ("failureThreshold", int()),
        ("terminationGracePeriodSeconds", int()),
    ])
}

fn security_context() -> Value {
    obj(&[
        (
            "capabilities",
            obj(&[("add", atomic_list(s())), ("drop", atomic_list(s()))]),
        ),
        ("privileged", boolean()),
        ("runAsUser", int()),
        ("runAsGroup", int()),
        ("runAsNonRoot", boolean()),
        ("fsGroup", int()),
        ("readOnlyRootFilesystem", boolean()),
        ("allowPrivilegeEscalation", boolean()),
        ("supplementalGroups", atomic_list(int())),
        (
            "seccompProfile",
            obj(&[("type", s()), ("localhostProfile", s())]),
        ),
        (
            "seLinuxOptions",
            obj(&[("user", s()), ("role", s()), ("type", s()), ("level", s())]),
        ),
    ])
}

fn container() -> Value {
    obj(&[
        ("name", s()),
        ("image", s()),
        ("imagePullPolicy", s()),
        ("command", atomic_list(s())),
        ("args", atomic_list(s())),
        ("workingDir", s()),
        (
            "ports",
            merge_list(
                obj(&[
                    ("containerPort", int()),
                    ("name", s()),
                    ("protocol", s()),
                    ("hostPort", int()),
                    ("hostIP", s()),
                ]),
                "containerPort",
            ),
        ),
        (
            "env",
            merge_list(
                obj(&[
                    ("name", s()),
                    ("value", s()),
                    (
                        "valueFrom",
                        obj(&[
                            ("configMapKeyRef", key_ref()),
                            ("secretKeyRef", key_ref()),
                            ("fieldRef", obj(&[("fieldPath", s()), ("apiVersion", s())])),
                            (
                                "resourceFieldRef",
                                obj(&[
                                    ("resource", s()),
                                    ("containerName", s()),
                                    ("divisor", int_or_string()),
                                ]),
                            ),
                        ]),
                    ),
                ]),
                "name",
            ),
        ),
        (
            "envFrom",
            atomic_list(obj(&[
                ("prefix", s()),
                (
                    "configMapRef",
                    obj(&[("name", s()), ("optional", boolean())]),
                ),
                ("secretRef", obj(&[("name", s()), ("optional", boolean())])),
            ])),
        ),
        (
            "resources",
            obj(&[("limits", string_map()), ("requests", string_map())]),
        ),
        (
            "volumeMounts",
            merge_list(
                obj(&[
                    ("name", s()),
                    ("mountPath", s()),
                    ("subPath", s()),
                    ("readOnly", boolean()),
                ]),
                "mountPath",
            ),
        ),
        ("livenessProbe", probe()),
        ("readinessProbe", probe()),
        ("startupProbe", probe()),
        (
            "lifecycle",
            obj(&[("postStart", probe()), ("preStop", probe())]),
        ),
        ("securityContext", security_context()),
        ("stdin", boolean()),
        ("tty", boolean()),
        ("terminationMessagePath", s()),
        ("terminationMessagePolicy", s()),
    ])
}

fn volume() -> Value {
    let items = atomic_list(obj(&[("key", s()), ("path", s()), ("mode", int())]));
    json!({
        "type": "object",
        "properties": {
            "name": s(),
            "emptyDir": obj(&[("medium", s()), ("sizeLimit", int_or_string())]),
            "configMap": obj(&[("name", s()), ("items", items.clone()), ("defaultMode", int()), ("optional", boolean())]),
            "secret": obj(&[("secretName", s()), ("items", items), ("defaultMode", int()), ("optional", boolean())]),
            "persistentVolumeClaim": obj(&[("claimName", s()), ("readOnly", boolean())]),
            "hostPath": obj(&[("path", s()), ("type", s())]),
        },
        "x-kubernetes-patch-strategy": "retainKeys",
    })
}

fn toleration() -> Value {
    obj(&[
        ("key", s()),
        ("operator", s()),
        ("value", s()),
        ("effect", s()),
        ("tolerationSeconds", int()),
    ])
}

fn pod_spec() -> Value {
    obj(&[
        (
            "containers",
            merge_list(r("io.k8s.api.core.v1.Container"), "name"),
        ),
        (
            "initContainers",
            merge_list(r("io.k8s.api.core.v1.Container"), "name"),
        ),
        ("volumes", merge_list(volume(), "name")),
        ("nodeSelector", string_map()),
        ("nodeName", s()),
        ("serviceAccountName", s()),
        ("serviceAccount", s()),
        ("restartPolicy", s()),
        ("terminationGracePeriodSeconds", int()),
        ("dnsPolicy", s()),
        ("hostNetwork", boolean()),
        ("schedulerName", s()),
        ("priorityClassName", s()),
        ("securityContext", security_context()),
        (
            "imagePullSecrets",
            merge_list(obj(&[("name", s())]), "name"),
        ),
        ("tolerations", atomic_list(toleration())),
        (
            "affinity",
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        ),
        (
            "hostAliases",
            merge_list(obj(&[("ip", s()), ("hostnames", atomic_list(s()))]), "ip"),
        ),
    ])
}

fn pod_template() -> Value {
    obj(&[
        (
            "metadata",
            r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        ),
        ("spec", r("io.k8s.api.core.v1.PodSpec")),
    ])
}

/// Schemas shared by every group-version document (references resolve within one document).
pub fn common_schemas() -> Value {
    let owner_ref = obj(&[
        ("apiVersion", s()),
        ("kind", s()),
        ("name", s()),
        ("uid", s()),
        ("controller", boolean()),
        ("blockOwnerDeletion", boolean()),
    ]);
    json!({
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": obj(&[
            ("name", s()),
            ("generateName", s()),
            ("namespace", s()),
            ("labels", string_map()),
            ("annotations", string_map()),
            ("finalizers", merge_set(s())),
            ("ownerReferences", merge_list(owner_ref, "uid")),
            ("resourceVersion", s()),
            ("uid", s()),
            ("generation", int()),
            ("creationTimestamp", s()),
            ("deletionTimestamp", s()),
            ("managedFields", atomic_list(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))),
        ]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": selector(),
        "io.k8s.api.core.v1.Container": container(),
        "io.k8s.api.core.v1.PodSpec": pod_spec(),
        "io.k8s.api.core.v1.PodTemplateSpec": pod_template(),
    })
}

fn workload_spec(extra: &[(&str, Value)]) -> Value {
    let mut fields = vec![
        ("replicas", int()),
        (
            "selector",
            r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
        ),
        ("template", r("io.k8s.api.core.v1.PodTemplateSpec")),
        ("minReadySeconds", int()),
        ("revisionHistoryLimit", int()),
        ("paused", boolean()),
        ("progressDeadlineSeconds", int()),
        ("serviceName", s()),
        ("podManagementPolicy", s()),
    ];
    fields.extend(extra.iter().cloned());
    obj(&fields)
}

/// The spec (and data) structure of a kind, by group and kind.
fn kind_fields(group: &str, kind: &str) -> Vec<(&'static str, Value)> {
    let strategy = json!({
        "type": "object",
        "properties": {
            "type": s(),
            "rollingUpdate": obj(&[("maxSurge", int_or_string()), ("maxUnavailable", int_or_string()), ("partition", int())]),
        },
        "x-kubernetes-patch-strategy": "retainKeys",
    });
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    match (group, kind) {
        ("", "Pod") => vec![("spec", r("io.k8s.api.core.v1.PodSpec")), ("status", open)],
        ("", "PodTemplate") => vec![("template", r("io.k8s.api.core.v1.PodTemplateSpec"))],
        ("", "ConfigMap") => vec![
            ("data", string_map()),
            ("binaryData", string_map()),
            ("immutable", boolean()),
        ],
        ("", "Secret") => vec![
            ("data", string_map()),
            ("stringData", string_map()),
            ("type", s()),
            ("immutable", boolean()),
        ],
        ("", "Namespace") => vec![
            ("spec", obj(&[("finalizers", atomic_list(s()))])),
            ("status", open),
        ],
        ("", "ServiceAccount") => vec![
            (
                "secrets",
                merge_list(obj(&[("name", s()), ("namespace", s())]), "name"),
            ),
            ("imagePullSecrets", atomic_list(obj(&[("name", s())]))),
            ("automountServiceAccountToken", boolean()),
        ],
        ("", "Service") => vec![
            (
                "spec",
                obj(&[
                    ("type", s()),
                    ("selector", string_map()),
                    ("clusterIP", s()),
                    ("clusterIPs", atomic_list(s())),
                    ("externalIPs", atomic_list(s())),
                    ("externalName", s()),
                    ("sessionAffinity", s()),
                    ("loadBalancerIP", s()),
                    ("externalTrafficPolicy", s()),
                    ("ipFamilies", atomic_list(s())),
                    ("ipFamilyPolicy", s()),
                    (
                        "ports",
                        merge_list(
                            obj(&[
                                ("name", s()),
                                ("port", int()),
                                ("targetPort", int_or_string()),
                                ("nodePort", int()),
                                ("protocol", s()),
                                ("appProtocol", s()),
                            ]),
                            "port",
                        ),
                    ),
                ]),
            ),
            ("status", open),
        ],
        ("apps", "Deployment") => vec![
            ("spec", workload_spec(&[("strategy", strategy)])),
            ("status", open),
        ],
        ("apps", "StatefulSet") | ("apps", "DaemonSet") => vec![
            ("spec", workload_spec(&[("updateStrategy", strategy)])),
            ("status", open),
        ],
        ("apps", "ReplicaSet") => vec![("spec", workload_spec(&[])), ("status", open)],
        ("batch", "Job") => vec![
            (
                "spec",
                obj(&[
                    ("template", r("io.k8s.api.core.v1.PodTemplateSpec")),
                    (
                        "selector",
                        r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
                    ),
                    ("parallelism", int()),
                    ("completions", int()),
                    ("backoffLimit", int()),
                    ("activeDeadlineSeconds", int()),
                    ("ttlSecondsAfterFinished", int()),
                ]),
            ),
            ("status", open),
        ],
        ("batch", "CronJob") => vec![
            (
                "spec",
                obj(&[
                    ("schedule", s()),
                    ("suspend", boolean()),
                    ("concurrencyPolicy", s()),
                    ("successfulJobsHistoryLimit", int()),
                    ("failedJobsHistoryLimit", int()),
                    (
                        "jobTemplate",
                        obj(&[
                            (
                                "metadata",
                                r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                            ),
                            (
                                "spec",
                                obj(&[
                                    ("template", r("io.k8s.api.core.v1.PodTemplateSpec")),
                                    ("backoffLimit", int()),
                                    ("completions", int()),
                                    ("parallelism", int()),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("status", open),
        ],
        _ => vec![
            ("spec", open.clone()),
            ("status", open.clone()),
            ("data", open.clone()),
            ("rules", atomic_list(open.clone())),
            ("subjects", atomic_list(open.clone())),
            ("roleRef", open),
        ],
    }
}

/// The component schema of one resource's kind, tagged with its group-version-kind so kubectl's
/// `LookupResource` finds it.
pub fn kind_schema(res: &ResourceInfo) -> Value {
    let mut fields = vec![
        ("apiVersion", s()),
        ("kind", s()),
        (
            "metadata",
            r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        ),
    ];
    fields.extend(kind_fields(&res.group, &res.kind));
    let mut schema = obj(&fields);
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": res.group, "version": res.version, "kind": res.kind}]);
    schema
}
