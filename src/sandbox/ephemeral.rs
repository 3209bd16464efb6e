//! Ephemeral containers (`kubectl debug`): the `pods/<name>/ephemeralcontainers` subresource's
//! rules, as the apiserver applies them (`pkg/registry/core/pod/strategy.go`,
//! `ValidatePodEphemeralContainersUpdate` and `validateEphemeralContainers` in
//! `pkg/apis/core/validation`), and what the kubelet reports once one runs.
//!
//! Only `spec.ephemeralContainers` may change through the subresource (anything else in the
//! request is dropped); containers may be added, never removed or changed.

use serde_json::{json, Value};

use super::store::now_rfc3339;

/// The annotation the kubelet puts on the mirror of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Container fields an ephemeral container may not set, in `core.Container` field order.
const FORBIDDEN_FIELDS: [&str; 8] = [
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

fn list<'a>(pod: &'a Value, field: &str) -> &'a [Value] {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name_of(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The apiserver's defaults for a container, so that an old container sent back as it was
/// stored compares equal.
pub fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    m.entry("terminationMessagePath")
        .or_insert_with(|| json!("/dev/termination-log"));
    m.entry("terminationMessagePolicy")
        .or_insert_with(|| json!("File"));
    if !m.contains_key("imagePullPolicy") {
        let image = m.get("image").and_then(Value::as_str).unwrap_or("");
        let last = image.rsplit('/').next().unwrap_or("");
        let tag = last.split('@').next().unwrap_or("").split_once(':');
        let policy = match tag {
            _ if image.contains('@') => "IfNotPresent",
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
}

/// The pod an ephemeralcontainers update stores: `current` with the request's ephemeral
/// containers (defaulted) and resourceVersion, everything else dropped.
pub fn prepare_update(current: &Value, request: &Value) -> Value {
    let mut out = current.clone();
    let mut containers = request
        .pointer("/spec/ephemeralContainers")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(cs) = containers.as_array_mut() {
        cs.iter_mut().for_each(default_container);
    }
    if !out["spec"].is_object() {
        out["spec"] = json!({});
    }
    match containers {
        Value::Array(cs) if !cs.is_empty() => out["spec"]["ephemeralContainers"] = json!(cs),
        _ => {
            if let Some(spec) = out["spec"].as_object_mut() {
                spec.remove("ephemeralContainers");
            }
        }
    }
    if let Some(rv) = request.pointer("/metadata/resourceVersion") {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    out
}

/// Whether `name` is a DNS-1123 label, and the apiserver's complaint if not.
fn dns_label_error(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    })
}

/// `ValidatePodEphemeralContainersUpdate`: the errors (`field: Type: detail`) of storing `new`
/// over `old`; empty when valid.
pub fn validate_update(old: &Value, new: &Value) -> Vec<String> {
    let mirrored = old
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some();
    if mirrored {
        return vec!["[]: Forbidden: static pods do not support ephemeral containers".into()];
    }
    let mut errs = Vec::new();
    let regular: Vec<&str> = list(new, "containers")
        .iter()
        .chain(list(new, "initContainers"))
        .map(name_of)
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    for (i, ec) in list(new, "ephemeralContainers").iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = name_of(ec);
        if name.is_empty() {
            errs.push(format!("{path}.name: Required value"));
        } else if let Some(e) = dns_label_error(name) {
            errs.push(format!("{path}.name: {e}"));
        }
        if ec
            .get("image")
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            errs.push(format!("{path}.image: Required value"));
        }
        for field in FORBIDDEN_FIELDS {
            let set = match ec.get(field) {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                errs.push(format!(
                    "{path}.{field}: Forbidden: cannot be set for an Ephemeral Container"
                ));
            }
        }
        if !name.is_empty() {
            if regular.contains(&name) || seen.contains(&name) {
                errs.push(format!("{path}.name: Duplicate value: {name:?}"));
            }
            seen.push(name);
        }
        if let Some(target) = ec
            .get("targetContainerName")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if !regular.contains(&target) {
                errs.push(format!("{path}.targetContainerName: Not found: {target:?}"));
            }
        }
    }
    let new_ecs = list(new, "ephemeralContainers");
    for old_ec in list(old, "ephemeralContainers") {
        let name = name_of(old_ec);
        match new_ecs.iter().find(|c| name_of(c) == name) {
            None => errs.push(format!(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers {name:?} may not be removed\n"
            )),
            Some(c) if c != old_ec => errs.push(format!(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers {name:?} may not be changed\n"
            )),
            Some(_) => {}
        }
    }
    errs
}

/// The process a container runs: its command and args, or the image's default (`sh` for the
/// debugging images people use: busybox, alpine, netshoot, ubuntu).
pub fn argv(c: &Value) -> Vec<String> {
    let strings = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let (command, args) = (strings("command"), strings("args"));
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.into_iter().chain(args).collect(),
        (true, false) => args,
        (true, true) => vec!["sh".into()],
    }
}

/// Whether the container's process is an interactive shell reading its stdin (`kubectl debug
/// -it`, `kubectl run -it … -- sh`), which `attach` then talks to.
pub fn is_interactive_shell(c: &Value) -> bool {
    let stdin = c.get("stdin").and_then(Value::as_bool).unwrap_or(false);
    let argv = argv(c);
    let shell = argv
        .first()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|p| matches!(p, "sh" | "ash" | "bash" | "zsh"));
    stdin && shell && !argv.iter().skip(1).any(|a| a == "-c")
}

/// The kubelet: every ephemeral container without a status is started. A shell without stdin
/// reads EOF and exits at once (`kubectl debug POD --image=busybox` without `-i`); any other
/// process keeps running.
pub fn run_ephemeral(pod: &mut Value) {
    let ecs = list(pod, "ephemeralContainers").to_vec();
    if ecs.is_empty() {
        return;
    }
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let mut statuses = pod["status"]["ephemeralContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    for ec in &ecs {
        let name = name_of(ec);
        if statuses.iter().any(|s| name_of(s) == name) {
            continue;
        }
        let image = ec.get("image").and_then(Value::as_str).unwrap_or("");
        let now = now_rfc3339();
        let argv = argv(ec);
        let exits_at_once = !ec.get("stdin").and_then(Value::as_bool).unwrap_or(false)
            && argv.first().is_some_and(|p| p != "sleep" && p != "tail");
        let state = if exits_at_once {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                                  "containerID": container_id(&ns, &pod_name, name)}})
        } else {
            json!({"running": {"startedAt": now}})
        };
        statuses.push(json!({
            "name": name,
            "image": image,
            "imageID": format!("{image}@sha256:{:016x}{:016x}", super::discovery::fnv64(image.as_bytes()), super::discovery::fnv64(name.as_bytes())),
            "containerID": container_id(&ns, &pod_name, name),
            "ready": false,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }));
    }
    pod["status"]["ephemeralContainerStatuses"] = json!(statuses);
}

fn container_id(ns: &str, pod: &str, name: &str) -> String {
    use super::discovery::fnv64;
    format!(
        "containerd://{:016x}{:016x}",
        fnv64(format!("{ns}/{pod}/{name}").as_bytes()),
        fnv64(name.as_bytes())
    )
}

/// The container's process ended with `code` (an attached shell that exited).
pub fn terminate(pod: &mut Value, name: &str, code: i32) {
    let Some(statuses) = pod
        .pointer_mut("/status/ephemeralContainerStatuses")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    if let Some(s) = statuses.iter_mut().find(|s| name_of(s) == name) {
        let started = s
            .pointer("/state/running/startedAt")
            .cloned()
            .unwrap_or_else(|| json!(now_rfc3339()));
        let id = s["containerID"].clone();
        s["state"] = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "containerID": id,
        }});
    }
}

/// Every container of the pod by name: regular, init and ephemeral.
pub fn find_container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| list(pod, f))
        .find(|c| name_of(c) == name)
}

pub fn is_ephemeral(pod: &Value, name: &str) -> bool {
    list(pod, "ephemeralContainers")
        .iter()
        .any(|c| name_of(c) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "dev", "resourceVersion": "7"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            "status": {"phase": "Running"},
        })
    }

    fn debugger(name: &str) -> Value {
        json!({"name": name, "image": "busybox", "stdin": true, "tty": true, "targetContainerName": "web"})
    }

    fn with(ecs: &[Value]) -> Value {
        json!({"spec": {"ephemeralContainers": ecs}})
    }

    #[test]
    fn adding_is_allowed_and_only_ephemeral_containers_change() {
        let old = pod();
        let mut request = with(&[debugger("debugger-abc")]);
        request["spec"]["containers"] = json!([{"name": "evil", "image": "x"}]);
        request["metadata"] = json!({"labels": {"sneaky": "yes"}});
        let new = prepare_update(&old, &request);
        assert_eq!(validate_update(&old, &new), Vec::<String>::new());
        assert_eq!(new["spec"]["containers"], old["spec"]["containers"]);
        assert!(new["metadata"].get("labels").is_none());
        assert_eq!(
            new["spec"]["ephemeralContainers"][0]["imagePullPolicy"],
            "Always"
        );
        assert_eq!(
            new["spec"]["ephemeralContainers"][0]["terminationMessagePolicy"],
            "File"
        );
    }

    #[test]
    fn existing_ones_may_not_be_removed_or_changed() {
        let old = prepare_update(&pod(), &with(&[debugger("debugger-abc")]));
        // Sent back without the defaults it was stored with: still the same container.
        let again = prepare_update(&old, &with(&[debugger("debugger-abc"), debugger("two")]));
        assert!(validate_update(&old, &again).is_empty());

        let removed = prepare_update(&old, &with(&[debugger("two")]));
        assert_eq!(
            validate_update(&old, &removed),
            ["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger-abc\" may not be removed\n"]
        );
        let mut changed_one = debugger("debugger-abc");
        changed_one["image"] = json!("alpine");
        let changed = prepare_update(&old, &with(&[changed_one]));
        assert_eq!(
            validate_update(&old, &changed),
            ["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger-abc\" may not be changed\n"]
        );
        let cleared = prepare_update(&old, &json!({"spec": {}}));
        assert_eq!(validate_update(&old, &cleared).len(), 1);
    }

    #[test]
    fn new_ones_are_validated() {
        let old = pod();
        let mut bad = debugger("web");
        bad["ports"] = json!([{"containerPort": 80}]);
        bad["targetContainerName"] = json!("nope");
        let no_image = json!({"name": "Bad_Name"});
        let new = prepare_update(&old, &with(&[bad, no_image]));
        let errs = validate_update(&old, &new);
        assert_eq!(
            errs,
            [
                "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[0].name: Duplicate value: \"web\"",
                "spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.ephemeralContainers[1].image: Required value",
            ]
        );
        let mut static_pod = pod();
        static_pod["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "abc"});
        let new = prepare_update(&static_pod, &with(&[debugger("d")]));
        assert_eq!(
            validate_update(&static_pod, &new),
            ["[]: Forbidden: static pods do not support ephemeral containers"]
        );
    }

    #[test]
    fn kubelet_runs_shells_with_stdin_and_ends_those_without() {
        let mut p = prepare_update(
            &pod(),
            &with(&[
                debugger("interactive"),
                json!({"name": "oneshot", "image": "busybox", "command": ["echo", "hi"]}),
                json!({"name": "sleeper", "image": "busybox", "command": ["sleep", "1d"]}),
            ]),
        );
        run_ephemeral(&mut p);
        fn state_of(p: &Value, i: usize) -> Value {
            p["status"]["ephemeralContainerStatuses"][i]["state"].clone()
        }
        assert!(state_of(&p, 0)["running"].is_object());
        assert_eq!(state_of(&p, 1)["terminated"]["reason"], "Completed");
        assert!(state_of(&p, 2)["running"].is_object());
        assert!(is_interactive_shell(&p["spec"]["ephemeralContainers"][0]));
        assert!(!is_interactive_shell(&p["spec"]["ephemeralContainers"][1]));
        let started = state_of(&p, 0);
        run_ephemeral(&mut p);
        assert_eq!(
            state_of(&p, 0),
            started,
            "a started container is left alone"
        );
        terminate(&mut p, "interactive", 3);
        assert_eq!(state_of(&p, 0)["terminated"]["exitCode"], 3);
        assert_eq!(state_of(&p, 0)["terminated"]["reason"], "Error");
    }
}
