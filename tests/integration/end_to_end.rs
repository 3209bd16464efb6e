//! The main path: log in, run the real kubectl through ztk, and find every call audited on both
//! sides, linked to its command line.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use ztk::audit::{CallRow, Filter};

use crate::harness::*;

fn manifest(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\n  namespace: dev\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: hello}}\n  template:\n    metadata:\n      labels: {{app: hello}}\n    spec:\n      containers:\n      - name: hello\n        image: {image}\n        ports:\n        - containerPort: 80\n"
    )
}

fn calls_of(rows: &[CallRow], command: &str) -> Vec<CallRow> {
    rows.iter()
        .filter(|r| r.command_line.as_deref() == Some(command))
        .cloned()
        .collect()
}

#[test]
fn kubectl_through_ztk_is_audited_on_both_sides() {
    let env = Env::start();
    env.login();

    let pods = env.kubectl(&["get", "po", "-A"]).success();
    assert!(
        pods.contains("NAMESPACE") && pods.contains("STATUS"),
        "{pods}"
    );
    assert!(
        pods.contains("debug-shell") && pods.contains("Running"),
        "{pods}"
    );
    assert!(
        pods.contains("kube-system") && pods.contains("prod"),
        "{pods}"
    );

    let ns = env.kubectl(&["get", "ns"]).success();
    for name in ["default", "kube-system", "dev", "prod"] {
        assert!(ns.contains(name), "{ns}");
    }

    let file = env.path("hello.yaml");
    write(&file, &manifest("nginx:1.26"));
    let created = env
        .kubectl(&["apply", "-f", file.to_str().unwrap()])
        .success();
    assert!(
        created.contains("deployment.apps/hello created"),
        "{created}"
    );
    write(&file, &manifest("nginx:1.27"));
    let configured = env
        .kubectl(&["apply", "-f", file.to_str().unwrap()])
        .success();
    assert!(
        configured.contains("deployment.apps/hello configured"),
        "{configured}"
    );

    let yaml = env
        .kubectl(&["get", "deploy", "hello", "-n", "dev", "-o", "yaml"])
        .success();
    assert!(
        yaml.contains("image: nginx:1.27") && yaml.contains("containerPort: 80"),
        "{yaml}"
    );

    let logs = env.kubectl(&["logs", "debug-shell", "-n", "dev"]).success();
    assert!(logs.contains("debug-shell"), "{logs}");

    let deleted = env
        .kubectl(&["delete", "deploy", "hello", "-n", "dev"])
        .success();
    assert!(deleted.contains("deleted"), "{deleted}");

    // The client's own log: every call carries the command line that caused it.
    let local = env.local_store().list_calls(&Filter::default()).unwrap();
    let get_pods = calls_of(&local, "kubectl get po -A");
    let list = get_pods
        .iter()
        .find(|r| r.call.verb == "list" && r.call.resource == "pods")
        .unwrap_or_else(|| panic!("no list pods call in {get_pods:#?}"));
    assert_eq!(list.call.status, 200);
    assert_eq!(list.call.namespace, "");
    assert_eq!(list.call.user, "alice");
    assert_eq!(list.call.cluster, "sandbox");
    assert!(list.call.bytes_out > 0 && list.call.duration_us > 0);
    assert_eq!(list.call.kubectl_command, "kubectl get");

    let apply = calls_of(&local, &format!("kubectl apply -f {}", file.display()));
    assert!(
        apply.iter().any(|r| r.call.verb == "create"
            && r.call.resource == "deployments"
            && r.call.namespace == "dev"
            && r.call.status == 201),
        "{apply:#?}"
    );
    assert!(
        apply
            .iter()
            .any(|r| r.call.verb == "patch" && r.call.name == "hello" && r.call.status == 200),
        "{apply:#?}"
    );
    let delete = calls_of(&local, "kubectl delete deploy hello -n dev");
    assert!(
        delete.iter().any(|r| r.call.verb == "delete"
            && r.call.name == "hello"
            && r.call.api_group == "apps"),
        "{delete:#?}"
    );
    let logs = calls_of(&local, "kubectl logs debug-shell -n dev");
    assert!(
        logs.iter()
            .any(|r| r.call.subresource == "log" && r.call.verb == "get"),
        "{logs:#?}"
    );

    // The gateway's authoritative log holds the same calls, joined to the shipped commands.
    let gateway = env.gateway_calls(&Filter::default(), local.len());
    assert_eq!(
        gateway.len(),
        local.len(),
        "gateway and client disagree on the number of calls"
    );
    for row in &local {
        let twin = gateway
            .iter()
            .find(|g| g.call.request_id == Some(row.call.id))
            .unwrap_or_else(|| panic!("no gateway record for {:?}", row.call));
        assert_eq!(twin.call.verb, row.call.verb);
        assert_eq!(twin.call.resource, row.call.resource);
        assert_eq!(twin.call.namespace, row.call.namespace);
        assert_eq!(twin.call.status, row.call.status);
        assert_eq!(twin.call.command_id, row.call.command_id);
        assert_eq!(
            twin.command_line, row.command_line,
            "command line of {:?}",
            row.call
        );
        assert_eq!(twin.call.user, "alice");
        assert_eq!(twin.call.source_ip, "127.0.0.1");
        // The gateway hop is inside the client's. Each side stops its clock when its body stream
        // reports the end, which on a loaded machine can be polled a scheduler tick late.
        assert!(
            twin.call.duration_us <= row.call.duration_us + 5_000,
            "the gateway hop ({} µs) is inside the client's ({} µs)",
            twin.call.duration_us,
            row.call.duration_us
        );
    }

    // The table lists the same, with the command.
    let table = env
        .ztk(&[
            "audit", "list", "--view", "calls", "-o", "table", "--verb", "delete",
        ])
        .success();
    assert!(
        table.contains("kubectl delete deploy hello -n dev") && table.contains("deployments/hello"),
        "{table}"
    );
    let gw_table = env
        .gateway_cmd(&["audit", "--resource", "pods/log"])
        .success();
    assert!(
        gw_table.contains("kubectl logs debug-shell -n dev"),
        "{gw_table}"
    );
}

#[test]
fn watch_receives_events_and_is_recorded_when_it_ends() {
    let env = Env::start();
    env.login();
    let mut watch = env
        .kubectl(&["get", "po", "-n", "dev", "-w"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The initial list arrives first.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no output from get -w");
    assert!(first.contains("NAME"), "{first}");
    env.kubectl(&["run", "watched", "-n", "dev", "--image", "busybox:1.36"])
        .success();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = false;
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("watched") {
                seen = true;
                break;
            }
        }
    }
    unsafe {
        libc::kill(watch.id() as i32, libc::SIGINT);
    }
    let status = watch.wait().unwrap();
    assert!(seen, "the watch never showed the new pod");
    // ztk passed the signal on, kubectl stopped, and ztk exited with kubectl's code.
    assert!(
        !status.success(),
        "an interrupted watch is not a success: {status}"
    );
    let filter = Filter {
        verbs: vec!["watch".into()],
        ..Default::default()
    };
    let local = env.local_store().list_calls(&filter).unwrap();
    let w = local
        .iter()
        .find(|r| r.call.resource == "pods")
        .unwrap_or_else(|| panic!("{local:#?}"));
    assert_eq!(w.command_line.as_deref(), Some("kubectl get po -n dev -w"));
    assert_eq!(w.call.namespace, "dev");
    assert!(w.call.bytes_out > 0, "the stream's bytes are counted");
    let gw = env.gateway_calls(&filter, 1);
    assert!(
        gw.iter()
            .any(|r| r.call.resource == "pods" && r.call.namespace == "dev"),
        "{gw:#?}"
    );
}

#[test]
fn oldest_and_newest_kubectl_work() {
    let env = Env::start();
    env.login();
    for kubectl in [KUBECTL_127, KUBECTL_133] {
        let out = env
            .kubectl(&["get", "po", "-A"])
            .env("ZTK_KUBECTL", kubectl)
            .success();
        assert!(
            out.contains("debug-shell") && out.contains("NAMESPACE"),
            "{kubectl}: {out}"
        );
    }
    let rows = env
        .local_store()
        .list_calls(&Filter {
            verbs: vec!["list".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        })
        .unwrap();
    let agents: Vec<&str> = rows.iter().map(|r| r.call.user_agent.as_str()).collect();
    assert!(agents.iter().any(|a| a.contains("v1.27")), "{agents:?}");
    assert!(agents.iter().any(|a| a.contains("v1.33")), "{agents:?}");
}

#[test]
fn secrets_in_the_command_line_are_redacted() {
    let env = Env::start();
    env.login();
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "dev",
        "--from-literal=password=hunter2",
    ])
    .success();
    let rows = env
        .local_store()
        .list_calls(&Filter {
            verbs: vec!["create".into()],
            ..Default::default()
        })
        .unwrap();
    let line = rows[0].command_line.clone().unwrap();
    assert_eq!(
        line,
        "kubectl create secret generic s1 -n dev --from-literal=password=***"
    );
    for file in [
        "client/data/audit.db",
        "client/data/audit.db-wal",
        "gw/audit.db",
        "gw/audit.db-wal",
    ] {
        let bytes = std::fs::read(env.path(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hunter2"),
            "{file} holds the secret"
        );
    }
}

#[test]
fn gateway_reaches_kubeconfig_clusters_with_their_own_token_or_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let with_token = SandboxProcess::start(dir.path().join("token.kubeconfig"), false);
    let with_cert = SandboxProcess::start(dir.path().join("cert.kubeconfig"), true);
    let clusters = format!(
        "[[clusters]]\nname = \"remote-token\"\nkubeconfig = \"{}\"\n[[clusters]]\nname = \"remote-cert\"\nkubeconfig = \"{}\"\ncontext = \"ztk-sandbox\"\n",
        with_token.kubeconfig.display(),
        with_cert.kubeconfig.display()
    );
    let env = Env::start_in(dir, "", &clusters);
    env.login();
    for cluster in ["remote-token", "remote-cert"] {
        let out = env
            .kubectl(&["--cluster", cluster, "get", "deploy", "-n", "prod"])
            .success();
        assert!(
            out.contains("web") && out.contains("3/3"),
            "{cluster}: {out}"
        );
    }
    let rows = env.gateway_calls(
        &Filter {
            resources: vec!["deployments".into()],
            ..Default::default()
        },
        2,
    );
    let mut clusters: Vec<&str> = rows.iter().map(|r| r.call.cluster.as_str()).collect();
    clusters.sort();
    assert_eq!(clusters, ["remote-cert", "remote-token"]);
    assert!(rows.iter().all(|r| r.call.status == 200));
    let status = env.ztk(&["status"]).success();
    assert!(
        status.contains("remote-cert")
            && status.contains("remote-token")
            && status.contains("sandbox"),
        "{status}"
    );
}

#[test]
fn impersonation_is_refused_and_audited() {
    let env = Env::start();
    env.login();
    let (_, out) = env
        .kubectl(&["get", "po", "-n", "dev", "--as", "bob"])
        .failure();
    assert!(
        out.contains(
            "Warning: ztk: forbidden: user \"alice\" (groups dev) may not impersonate user \"bob\""
        ),
        "{out}"
    );
    let denied = env.gateway_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(403)],
            ..Default::default()
        },
        1,
    );
    assert!(!denied.is_empty());
    assert!(
        denied
            .iter()
            .all(|r| r.call.decision == "deny" && r.call.reason.contains("impersonate")),
        "{denied:#?}"
    );
}

#[test]
fn status_and_logout() {
    let env = Env::start();
    env.login();
    let status = env.ztk(&["status"]).success();
    assert!(
        status.contains("alice")
            && status.contains(&env.url)
            && status.contains("Groups:   dev")
            && status.contains("sandbox"),
        "{status}"
    );
    let out = env.ztk(&["logout"]).success();
    assert!(out.contains("Logged out"), "{out}");
    let (_, out) = env.kubectl(&["get", "ns"]).failure();
    assert!(out.contains("ztk login"), "{out}");
    let (code, status) = env.ztk(&["status"]).failure();
    assert_eq!(code, 1);
    assert!(status.contains("ztk login"), "{status}");
    // The token file is gone; the session is revoked at the gateway too.
    assert!(!env.path("client/data/session-token").exists());
}

/// Every directory ztk makes is 0700 and every file 0600 — the client's config and data dirs
/// after `ztk kubectl` and plain kubectl (run dirs, the kubectl cache, the persistent proxy's
/// log, lock and pid files, the audit store with its WAL), and the gateway's data_dir —
/// except the certificates meant to be handed out.
#[cfg(unix)]
#[test]
fn everything_ztk_creates_is_private_except_public_certificates() {
    use std::os::unix::fs::PermissionsExt;
    // Whatever the umask, which the test's children inherit: a usual one here.
    let old = unsafe { libc::umask(0o022) };
    let env = Env::start();
    env.login();
    env.kubectl(&["get", "po", "-n", "dev"]).success();
    // The run directory lives only as long as its run: kubectl (a wrapper) reports its mode.
    let wrapper = env.path("kubectl-wrapper.sh");
    let seen_by_kubectl = env.path("run-modes");
    write(
        &wrapper,
        &format!(
            "#!/bin/sh\nstat -c '%a %n' \"$(dirname \"$KUBECONFIG\")\" \"$KUBECONFIG\" \"$KUBECACHEDIR\"/discovery > {}\nexec kubectl \"$@\"\n",
            seen_by_kubectl.display()
        ),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.kubectl(&["get", "ns"])
        .env("ZTK_KUBECTL", &wrapper)
        .success();
    let modes = std::fs::read_to_string(&seen_by_kubectl).unwrap();
    let modes: Vec<&str> = modes
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(modes, ["700", "600", "700"], "run dir, kubeconfig, cache");
    env.setup_plain();
    env.plain("kubectl", &["get", "po", "-n", "dev"]).success();
    // The proxy's records and the command's end are in the store: the WAL and SHM exist.
    env.ztk(&["audit", "push"]).success();
    unsafe { libc::umask(old) };

    let public = ["gw/ca.pem", "gw/server.pem", "client/config/gateway-ca.pem"];
    let mut seen = 0;
    let mut problems = Vec::new();
    let mut stack = vec![env.path("client"), env.path("gw"), env.path("home/.kube")];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(env.dir.path()).unwrap().to_str().unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        seen += 1;
        let mode = meta.permissions().mode() & 0o777;
        let allowed = public.contains(&rel);
        if mode & 0o077 != 0 && !allowed {
            problems.push(format!("{rel}: {mode:o}"));
        }
        // kubectl's own discovery cache, inside ztk's 0700 kubectl-cache/CLUSTER directory:
        // kubectl makes its files 0640 and directories 0750; they are unreachable to others.
        let kubectls =
            rel.starts_with("client/data/kubectl-cache/") && rel.matches('/').count() >= 3;
        if meta.is_dir() && !kubectls {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    assert!(problems.is_empty(), "readable by others: {problems:#?}");
    for must in [
        "client/data/audit.db-wal",
        "client/data/audit.db-shm",
        "client/data/proxy/proxy.log",
        "client/data/kubectl-cache/sandbox",
        "gw/audit.db-wal",
        "gw/gateway.db",
    ] {
        assert!(
            env.path(must).exists(),
            "{must} was not made, so not checked"
        );
    }
    assert!(seen > 20, "{seen}");
}

/// What a newcomer tries on the demo cluster, through ztk: server-side apply creates, `kubectl
/// top` reads the metrics API with the role `edit` (as metrics-server's aggregated reader allows),
/// and `kubectl debug` needs a role with ephemeral containers (as in Kubernetes), then works in a
/// pipe and in a terminal; every call is in the gateway's trail.
#[test]
fn server_side_apply_top_and_debug_work_through_ztk() {
    let env = Env::start();
    env.login();
    let cm = env.path("cm.yaml");
    write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-demo\n  namespace: dev\ndata:\n  k: v1\n",
    );
    let out = env
        .kubectl(&["apply", "--server-side", "-f", cm.to_str().unwrap()])
        .success();
    assert!(
        out.contains("configmap/ssa-demo serverside-applied"),
        "{out}"
    );
    let got = env
        .kubectl(&[
            "get",
            "cm",
            "ssa-demo",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.k}",
        ])
        .success();
    assert_eq!(got, "v1");

    let top = env.kubectl(&["top", "pods", "-n", "dev"]).success();
    assert!(
        top.starts_with("NAME") && top.contains("CPU(cores)") && top.contains("debug-shell"),
        "{top}"
    );

    let pod = "web-f4xbb9mvgl-pv968";
    let debug = [
        "debug",
        "-i",
        "-n",
        "dev",
        pod,
        "--image=busybox",
        "--target=web",
    ];
    let (_, out) = env
        .kubectl(&debug)
        .stdin_text("echo never\nexit\n")
        .failure();
    assert!(
        out.contains("forbidden") && out.contains("pods/ephemeralcontainers"),
        "{out}"
    );

    let roles = env.path("debugger.toml");
    write(
        &roles,
        "[[roles]]\nname = \"debugger\"\n[[roles.rules]]\napi_groups = [\"\"]\n\
         resources = [\"pods/ephemeralcontainers\"]\nverbs = [\"patch\"]\n",
    );
    env.gateway_cmd(&["role", "apply", "-f", roles.to_str().unwrap()])
        .success();
    env.role(&["bind", "debugger", "--user", "alice", "--namespace", "dev"]);
    // Bindings reach the running gateway within about 250 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = env
            .kubectl(&debug)
            .stdin_text("echo piped-ok\nhostname\nexit\n")
            .output();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.lines().any(|l| l == "piped-ok")
            && stdout.lines().any(|l| l == pod),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // In a terminal, as a person types it.
    let line = format!(
        "{} kubectl debug -it -n dev {pod} --image=busybox",
        ztk_bin()
    );
    let mut child = env
        .program("script", &["-qec", &line, "/dev/null"])
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &mut Vec<u8>, what: &str| {
        while !String::from_utf8_lossy(seen).contains(what) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(chunk) => seen.extend_from_slice(&chunk),
                Err(_) => panic!("no {what:?}: {:?}", String::from_utf8_lossy(seen)),
            }
        }
    };
    wait_for(&mut seen, "/ # ");
    use std::io::Write;
    stdin.write_all(b"echo tty-ok\r").unwrap();
    wait_for(&mut seen, "echo tty-ok\r\ntty-ok\r\n");
    stdin.write_all(b"exit\r").unwrap();
    wait_for(&mut seen, "Session ended");
    assert!(child.wait().unwrap().success());

    let patches = env.gateway_calls(
        &Filter {
            resources: vec!["pods/ephemeralcontainers".into()],
            ..Default::default()
        },
        3,
    );
    let decisions: Vec<(&str, u16)> = patches
        .iter()
        .map(|r| (r.call.decision.as_str(), r.call.status))
        .collect();
    assert!(decisions.contains(&("deny", 403)), "{decisions:?}");
    assert_eq!(
        decisions.iter().filter(|d| **d == ("allow", 200)).count(),
        2,
        "{decisions:?}"
    );
}
