//! Decoding of Kubernetes protobuf request bodies into JSON.
//!
//! Since 1.32 kubectl's typed clients (`kubectl create secret|configmap|namespace|deployment|…`)
//! send `application/vnd.kubernetes.protobuf` and do not fall back to JSON on a 415. So the
//! sandbox decodes the kinds those commands create, from field tables transcribed from the
//! `generated.proto` files of k8s.io/api. Unknown fields are skipped; unknown kinds get a 415.
//! Responses are always JSON, which every client accepts.

use base64::Engine;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy)]
enum T {
    Str,
    /// `bytes`, base64 in JSON.
    Bytes,
    Int,
    Bool,
    Msg(&'static [F]),
    /// An embedded message whose fields appear inline in JSON (`LocalObjectReference` in
    /// key selectors).
    Inline(&'static [F]),
    MapStr,
    MapBytes,
    /// `map<string, Quantity>`.
    MapQty,
    Qty,
    IntOrStr,
    Time,
}

#[derive(Clone, Copy)]
struct F {
    num: u64,
    name: &'static str,
    ty: T,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: T) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, ty: T) -> F {
    F {
        num,
        name,
        ty,
        repeated: true,
    }
}

static OWNER_REF: &[F] = &[
    f(1, "kind", T::Str),
    f(3, "name", T::Str),
    f(4, "uid", T::Str),
    f(5, "apiVersion", T::Str),
    f(6, "controller", T::Bool),
    f(7, "blockOwnerDeletion", T::Bool),
];

static OBJECT_META: &[F] = &[
    f(1, "name", T::Str),
    f(2, "generateName", T::Str),
    f(3, "namespace", T::Str),
    f(5, "uid", T::Str),
    f(6, "resourceVersion", T::Str),
    f(7, "generation", T::Int),
    f(8, "creationTimestamp", T::Time),
    f(11, "labels", T::MapStr),
    f(12, "annotations", T::MapStr),
    r(13, "ownerReferences", T::Msg(OWNER_REF)),
    r(14, "finalizers", T::Str),
];

static SELECTOR_REQ: &[F] = &[
    f(1, "key", T::Str),
    f(2, "operator", T::Str),
    r(3, "values", T::Str),
];
static LABEL_SELECTOR: &[F] = &[
    f(1, "matchLabels", T::MapStr),
    r(2, "matchExpressions", T::Msg(SELECTOR_REQ)),
];

static CONTAINER_PORT: &[F] = &[
    f(1, "name", T::Str),
    f(2, "hostPort", T::Int),
    f(3, "containerPort", T::Int),
    f(4, "protocol", T::Str),
    f(5, "hostIP", T::Str),
];
static KEY_SELECTOR: &[F] = &[
    f(1, "localObjectReference", T::Inline(LOCAL_REF)),
    f(2, "key", T::Str),
    f(3, "optional", T::Bool),
];
static ENV_SOURCE: &[F] = &[
    f(3, "configMapKeyRef", T::Msg(KEY_SELECTOR)),
    f(4, "secretKeyRef", T::Msg(KEY_SELECTOR)),
];
static ENV_VAR: &[F] = &[
    f(1, "name", T::Str),
    f(2, "value", T::Str),
    f(3, "valueFrom", T::Msg(ENV_SOURCE)),
];
static RESOURCES: &[F] = &[f(1, "limits", T::MapQty), f(2, "requests", T::MapQty)];
static VOLUME_MOUNT: &[F] = &[
    f(1, "name", T::Str),
    f(2, "readOnly", T::Bool),
    f(3, "mountPath", T::Str),
    f(4, "subPath", T::Str),
];
static CONTAINER: &[F] = &[
    f(1, "name", T::Str),
    f(2, "image", T::Str),
    r(3, "command", T::Str),
    r(4, "args", T::Str),
    f(5, "workingDir", T::Str),
    r(6, "ports", T::Msg(CONTAINER_PORT)),
    r(7, "env", T::Msg(ENV_VAR)),
    f(8, "resources", T::Msg(RESOURCES)),
    r(9, "volumeMounts", T::Msg(VOLUME_MOUNT)),
    f(13, "terminationMessagePath", T::Str),
    f(14, "imagePullPolicy", T::Str),
    f(16, "stdin", T::Bool),
    f(17, "stdinOnce", T::Bool),
    f(18, "tty", T::Bool),
    f(20, "terminationMessagePolicy", T::Str),
];
static LOCAL_REF: &[F] = &[f(1, "name", T::Str)];
static POD_SPEC: &[F] = &[
    r(2, "containers", T::Msg(CONTAINER)),
    f(3, "restartPolicy", T::Str),
    f(4, "terminationGracePeriodSeconds", T::Int),
    f(5, "activeDeadlineSeconds", T::Int),
    f(6, "dnsPolicy", T::Str),
    f(7, "nodeSelector", T::MapStr),
    f(8, "serviceAccountName", T::Str),
    f(10, "nodeName", T::Str),
    f(11, "hostNetwork", T::Bool),
    r(15, "imagePullSecrets", T::Msg(LOCAL_REF)),
    f(16, "hostname", T::Str),
    f(19, "schedulerName", T::Str),
    r(20, "initContainers", T::Msg(CONTAINER)),
    f(24, "priorityClassName", T::Str),
];
static POD_TEMPLATE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(POD_SPEC)),
];

static ROLLING_UPDATE: &[F] = &[
    f(1, "maxUnavailable", T::IntOrStr),
    f(2, "maxSurge", T::IntOrStr),
];
static DEPLOY_STRATEGY: &[F] = &[
    f(1, "type", T::Str),
    f(2, "rollingUpdate", T::Msg(ROLLING_UPDATE)),
];
static DEPLOYMENT_SPEC: &[F] = &[
    f(1, "replicas", T::Int),
    f(2, "selector", T::Msg(LABEL_SELECTOR)),
    f(3, "template", T::Msg(POD_TEMPLATE)),
    f(4, "strategy", T::Msg(DEPLOY_STRATEGY)),
    f(5, "minReadySeconds", T::Int),
    f(6, "revisionHistoryLimit", T::Int),
    f(7, "paused", T::Bool),
    f(9, "progressDeadlineSeconds", T::Int),
];
static DEPLOYMENT: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(DEPLOYMENT_SPEC)),
];

static JOB_SPEC: &[F] = &[
    f(1, "parallelism", T::Int),
    f(2, "completions", T::Int),
    f(3, "activeDeadlineSeconds", T::Int),
    f(4, "selector", T::Msg(LABEL_SELECTOR)),
    f(5, "manualSelector", T::Bool),
    f(6, "template", T::Msg(POD_TEMPLATE)),
    f(7, "backoffLimit", T::Int),
    f(8, "ttlSecondsAfterFinished", T::Int),
    f(9, "completionMode", T::Str),
    f(10, "suspend", T::Bool),
];
static JOB: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(JOB_SPEC)),
];
static JOB_TEMPLATE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(JOB_SPEC)),
];
static CRONJOB_SPEC: &[F] = &[
    f(1, "schedule", T::Str),
    f(2, "startingDeadlineSeconds", T::Int),
    f(3, "concurrencyPolicy", T::Str),
    f(4, "suspend", T::Bool),
    f(5, "jobTemplate", T::Msg(JOB_TEMPLATE)),
    f(6, "successfulJobsHistoryLimit", T::Int),
    f(7, "failedJobsHistoryLimit", T::Int),
    f(8, "timeZone", T::Str),
];
static CRONJOB: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(CRONJOB_SPEC)),
];

static SERVICE_PORT: &[F] = &[
    f(1, "name", T::Str),
    f(2, "protocol", T::Str),
    f(3, "port", T::Int),
    f(4, "targetPort", T::IntOrStr),
    f(5, "nodePort", T::Int),
    f(6, "appProtocol", T::Str),
];
static SERVICE_SPEC: &[F] = &[
    r(1, "ports", T::Msg(SERVICE_PORT)),
    f(2, "selector", T::MapStr),
    f(3, "clusterIP", T::Str),
    f(4, "type", T::Str),
    r(5, "externalIPs", T::Str),
    f(7, "sessionAffinity", T::Str),
    f(8, "loadBalancerIP", T::Str),
    f(10, "externalName", T::Str),
    f(11, "externalTrafficPolicy", T::Str),
    r(18, "clusterIPs", T::Str),
];
static SERVICE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(SERVICE_SPEC)),
];

static CONFIGMAP: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "data", T::MapStr),
    f(3, "binaryData", T::MapBytes),
    f(4, "immutable", T::Bool),
];
static SECRET: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "data", T::MapBytes),
    f(3, "type", T::Str),
    f(4, "stringData", T::MapStr),
    f(5, "immutable", T::Bool),
];
static NAMESPACE_SPEC: &[F] = &[r(1, "finalizers", T::Str)];
static NAMESPACE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(NAMESPACE_SPEC)),
];
static OBJECT_REF: &[F] = &[
    f(1, "kind", T::Str),
    f(2, "namespace", T::Str),
    f(3, "name", T::Str),
];
static SERVICE_ACCOUNT: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "secrets", T::Msg(OBJECT_REF)),
    r(3, "imagePullSecrets", T::Msg(LOCAL_REF)),
    f(4, "automountServiceAccountToken", T::Bool),
];

static POLICY_RULE: &[F] = &[
    r(1, "verbs", T::Str),
    r(2, "apiGroups", T::Str),
    r(3, "resources", T::Str),
    r(4, "resourceNames", T::Str),
    r(5, "nonResourceURLs", T::Str),
];
static ROLE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "rules", T::Msg(POLICY_RULE)),
];
static SUBJECT: &[F] = &[
    f(1, "kind", T::Str),
    f(2, "apiGroup", T::Str),
    f(3, "name", T::Str),
    f(4, "namespace", T::Str),
];
static ROLE_REF: &[F] = &[
    f(1, "apiGroup", T::Str),
    f(2, "kind", T::Str),
    f(3, "name", T::Str),
];
static ROLE_BINDING: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "subjects", T::Msg(SUBJECT)),
    f(3, "roleRef", T::Msg(ROLE_REF)),
];
static POD: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(POD_SPEC)),
];

static RESOURCE_ATTRS: &[F] = &[
    f(1, "namespace", T::Str),
    f(2, "verb", T::Str),
    f(3, "group", T::Str),
    f(4, "version", T::Str),
    f(5, "resource", T::Str),
    f(6, "subresource", T::Str),
    f(7, "name", T::Str),
];
static NON_RESOURCE_ATTRS: &[F] = &[f(1, "path", T::Str), f(2, "verb", T::Str)];
static ACCESS_REVIEW_SPEC: &[F] = &[
    f(1, "resourceAttributes", T::Msg(RESOURCE_ATTRS)),
    f(2, "nonResourceAttributes", T::Msg(NON_RESOURCE_ATTRS)),
];
static ACCESS_REVIEW: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(ACCESS_REVIEW_SPEC)),
];
static RULES_REVIEW: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(&[f(1, "namespace", T::Str)])),
];
static SELF_REVIEW: &[F] = &[f(1, "metadata", T::Msg(OBJECT_META))];
static TOKEN_REVIEW: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        T::Msg(&[f(1, "token", T::Str), r(2, "audiences", T::Str)]),
    ),
];

fn schema_for(kind: &str) -> Option<&'static [F]> {
    Some(match kind {
        "ConfigMap" => CONFIGMAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Service" => SERVICE,
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "Job" => JOB,
        "CronJob" => CRONJOB,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            ACCESS_REVIEW
        }
        "SelfSubjectRulesReview" => RULES_REVIEW,
        "SelfSubjectReview" => SELF_REVIEW,
        "TokenReview" => TOKEN_REVIEW,
        _ => return None,
    })
}

#[derive(Debug, PartialEq)]
pub enum ProtoError {
    /// A kind the sandbox has no field table for (answered with 415).
    UnsupportedKind(String),
    Malformed(String),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| malformed("truncated varint"))?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(malformed("varint too long"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| malformed("truncated field"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field: (number, wire type, varint value or payload).
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.bytes(8)?;
                Wire::Fixed
            }
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length overflow"))?;
                Wire::Len(self.bytes(n)?)
            }
            5 => {
                self.bytes(4)?;
                Wire::Fixed
            }
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((key >> 3, wire)))
    }
}

enum Wire<'a> {
    Varint(u64),
    /// fixed32/fixed64: no field in the tables uses them; skipped.
    Fixed,
    Len(&'a [u8]),
}

fn malformed(msg: &str) -> ProtoError {
    ProtoError::Malformed(msg.to_string())
}

fn as_str(w: &Wire<'_>) -> Result<String, ProtoError> {
    match w {
        Wire::Len(b) => String::from_utf8(b.to_vec()).map_err(|_| malformed("string is not UTF-8")),
        _ => Err(malformed("expected a length-delimited string")),
    }
}

fn len_payload<'a>(w: &Wire<'a>) -> Result<&'a [u8], ProtoError> {
    match w {
        Wire::Len(b) => Ok(b),
        _ => Err(malformed("expected a length-delimited field")),
    }
}

/// A `map<string, V>` entry: key = 1, value = 2.
fn map_entry(
    buf: &[u8],
    value: impl Fn(&Wire<'_>) -> Result<Value, ProtoError>,
) -> Result<(String, Value), ProtoError> {
    let mut rd = Reader { buf, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((num, w)) = rd.field()? {
        match num {
            1 => k = as_str(&w)?,
            2 => v = value(&w)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn decode_value(ty: T, w: &Wire<'_>) -> Result<Value, ProtoError> {
    Ok(match ty {
        T::Str => json!(as_str(w)?),
        T::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(len_payload(w)?)),
        // int32 fields carry negative numbers as 10-byte two's complement varints.
        T::Int => match w {
            Wire::Varint(v) => json!(*v as i64),
            _ => return Err(malformed("expected a varint")),
        },
        T::Bool => match w {
            Wire::Varint(v) => json!(*v != 0),
            _ => return Err(malformed("expected a varint")),
        },
        T::Msg(fields) | T::Inline(fields) => Value::Object(decode_msg(len_payload(w)?, fields)?),
        T::Qty => {
            let m = decode_msg(len_payload(w)?, &[f(1, "string", T::Str)])?;
            m.get("string").cloned().unwrap_or(json!("0"))
        }
        T::IntOrStr => {
            let m = decode_msg(
                len_payload(w)?,
                &[
                    f(1, "type", T::Int),
                    f(2, "intVal", T::Int),
                    f(3, "strVal", T::Str),
                ],
            )?;
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                m.get("strVal").cloned().unwrap_or(json!(""))
            } else {
                m.get("intVal").cloned().unwrap_or(json!(0))
            }
        }
        T::Time => {
            let m = decode_msg(
                len_payload(w)?,
                &[f(1, "seconds", T::Int), f(2, "nanos", T::Int)],
            )?;
            let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            time::OffsetDateTime::from_unix_timestamp(secs)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(Value::Null, Value::String)
        }
        // decode_msg reads maps entry by entry; a map type never reaches here.
        T::MapStr | T::MapBytes | T::MapQty => return Err(malformed("unexpected map field")),
    })
}

fn decode_msg(buf: &[u8], fields: &[F]) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    let mut rd = Reader { buf, pos: 0 };
    while let Some((num, w)) = rd.field()? {
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            continue;
        };
        let (key, value) = match field.ty {
            T::MapStr | T::MapBytes | T::MapQty => {
                let elem = match field.ty {
                    T::MapStr => T::Str,
                    T::MapBytes => T::Bytes,
                    _ => T::Qty,
                };
                let (k, v) = map_entry(len_payload(&w)?, |w| decode_value(elem, w))?;
                let map = out.entry(field.name).or_insert_with(|| json!({}));
                map[k] = v;
                continue;
            }
            T::Inline(inner) => {
                out.extend(decode_msg(len_payload(&w)?, inner)?);
                continue;
            }
            ty => (field.name, decode_value(ty, &w)?),
        };
        // gogo-protobuf writes every non-pointer string, empty or not; the apiserver's JSON
        // omits them (`omitempty`), and so do we.
        if value.as_str() == Some("") && !field.repeated {
            continue;
        }
        if field.repeated {
            match out.entry(key).or_insert_with(|| json!([])) {
                Value::Array(list) => list.push(value),
                other => *other = json!([value]),
            }
        } else {
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

static TYPE_META: &[F] = &[f(1, "apiVersion", T::Str), f(2, "kind", T::Str)];

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope holding an object of kind `kind`.
pub fn decode(body: &[u8], expected_kind: &str) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or_else(|| malformed("missing the k8s protobuf envelope"))?;
    let envelope = Value::Object(decode_msg(
        rest,
        &[f(1, "typeMeta", T::Msg(TYPE_META)), f(2, "raw", T::Bytes)],
    )?);
    let kind = envelope
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .unwrap_or(expected_kind)
        .to_string();
    let fields = schema_for(&kind).ok_or_else(|| ProtoError::UnsupportedKind(kind.clone()))?;
    let raw = envelope
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut obj = decode_msg(&raw, fields)?;
    if let Some(api_version) = envelope
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        obj.insert("apiVersion".into(), json!(api_version));
    }
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn varint_field(num: u64, v: u8) -> Vec<u8> {
        vec![(num << 3) as u8, v]
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let meta = [
            len_field(1, b"s1"),
            len_field(3, b"dev"),
            len_field(11, &[len_field(1, b"a"), len_field(2, b"b")].concat()),
        ]
        .concat();
        let secret = [
            len_field(1, &meta),
            len_field(
                2,
                &[len_field(1, b"password"), len_field(2, b"hunter2")].concat(),
            ),
            len_field(3, b"Opaque"),
            varint_field(5, 1),
            len_field(15, b"ignored"),
        ]
        .concat();
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Secret")].concat();
        let body = [
            b"k8s\x00".to_vec(),
            len_field(1, &type_meta),
            len_field(2, &secret),
        ]
        .concat();
        let v = decode(&body, "Secret").unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": true,
                   "metadata": {"name": "s1", "namespace": "dev", "labels": {"a": "b"}},
                   "data": {"password": "aHVudGVyMg=="}})
        );
    }

    #[test]
    fn repeated_and_int_or_string() {
        let port = [
            len_field(1, b"http"),
            varint_field(3, 80),
            len_field(4, &[varint_field(1, 1), len_field(3, b"web")].concat()),
        ]
        .concat();
        let spec = [
            len_field(1, &port),
            len_field(1, &port),
            len_field(4, b"NodePort"),
        ]
        .concat();
        let m = decode_msg(&len_field(2, &spec), SERVICE).unwrap();
        assert_eq!(m["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(m["spec"]["ports"][0]["targetPort"], "web");
        assert_eq!(m["spec"]["ports"][0]["port"], 80);
        assert_eq!(m["spec"]["type"], "NodePort");
    }

    #[test]
    fn errors() {
        assert!(matches!(
            decode(b"{}", "Secret"),
            Err(ProtoError::Malformed(_))
        ));
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Widget")].concat();
        let body = [b"k8s\x00".to_vec(), len_field(1, &type_meta)].concat();
        assert_eq!(
            decode(&body, "Widget"),
            Err(ProtoError::UnsupportedKind("Widget".into()))
        );
        let truncated = [b"k8s\x00".to_vec(), vec![0x0a, 0x20, 1]].concat();
        assert!(matches!(
            decode(&truncated, "Secret"),
            Err(ProtoError::Malformed(_))
        ));
    }
}
