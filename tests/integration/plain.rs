//! Plain kubectl (and other clients) with the kubeconfig from `ztk kubeconfig`: the exec
//! credential plugin, the persistent proxy, and the same audit trail as `ztk kubectl`.

use ztk::audit::Filter;

use crate::harness::*;

fn pods_listed() -> Filter {
    Filter {
        verbs: vec!["list".into()],
        resources: vec!["pods".into()],
        ..Default::default()
    }
}

#[test]
fn plain_kubectl_is_relayed_and_recorded_with_its_command_line() {
    let env = Env::start();
    env.setup_plain();
    let kubeconfig = std::fs::read_to_string(env.plain_kubeconfig()).unwrap();
    assert!(
        kubeconfig.contains("client.authentication.k8s.io/v1"),
        "{kubeconfig}"
    );
    assert!(
        kubeconfig.contains("interactiveMode: IfAvailable"),
        "{kubeconfig}"
    );
    assert!(
        !kubeconfig.contains("token"),
        "no token in a kubeconfig: {kubeconfig}"
    );

    let pods = env.plain("kubectl", &["get", "po", "-n", "dev"]).success();
    assert!(pods.contains("debug-shell"), "{pods}");
    assert!(env.proxy_pid().is_some(), "the plugin started the proxy");
    let status = env.ztk(&["proxy", "status"]).success();
    assert!(status.contains("running"), "{status}");

    // The proxy commits a call's record a few milliseconds after it ends (its writer batches):
    // wait for this one.
    let rows = env.local_calls(&pods_listed(), 1);
    let list = rows
        .iter()
        .find(|r| r.call.verb == "list" && r.call.resource == "pods")
        .unwrap_or_else(|| panic!("no list pods in {rows:#?}"));
    assert_eq!(list.command_line.as_deref(), Some("kubectl get po -n dev"));
    assert_eq!(list.call.kubectl_command, "kubectl get");
    assert!(!list.call.kubectl_session.is_empty());
    assert_eq!(list.call.user, "alice");
    assert_eq!(list.call.cluster, "sandbox");
    assert_eq!(list.call.path, "/api/v1/namespaces/dev/pods");
    let command = env
        .local_store()
        .command(list.call.command_id.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(command.access_method, ztk::audit::AccessMethod::Cli);
    assert!(!command.cwd.is_empty() && !command.host.is_empty());

    // The gateway has the same call, joined to the command line the proxy shipped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let gw = env.gateway_calls(&Filter::default(), 1);
        let twin = gw.iter().find(|g| g.call.request_id == Some(list.call.id));
        if let Some(twin) = twin {
            if twin.command_line.is_some() || std::time::Instant::now() > deadline {
                assert_eq!(twin.command_line.as_deref(), Some("kubectl get po -n dev"));
                break;
            }
        } else {
            assert!(std::time::Instant::now() < deadline, "no gateway twin");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The session token reaches neither the kubeconfig nor kubectl's credential.
    let token = std::fs::read_to_string(env.path("client/data/session-token")).unwrap();
    let token = token.trim();
    assert!(token.len() > 16 && !kubeconfig.contains(token));
    let credential = env.ztk(&["credential", "--cluster", "sandbox"]).success();
    let credential: serde_json::Value = serde_json::from_str(&credential).unwrap();
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(credential["kind"], "ExecCredential");
    let issued = credential["status"]["token"].as_str().unwrap();
    assert!(issued.starts_with("ztk2_") && !issued.contains(token));
    assert!(credential["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in ["credential-key", "server-key.pem"] {
            let path = env.path(&format!("client/data/proxy/{secret}"));
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
    }

    // The proxy brings the command record up to date: its calls, and its last activity as end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let command = env.local_store().command(command.id).unwrap().unwrap();
        if command.api_calls >= 3 && command.ended_us.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{command:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let stopped = env.ztk(&["proxy", "stop"]).success();
    assert!(stopped.contains("Stopped"), "{stopped}");
    let (code, _) = env.ztk(&["proxy", "status"]).failure();
    assert_eq!(code, 3);
}

#[test]
fn python_kubernetes_client_lists_pods_through_the_persistent_proxy() {
    let env = Env::start();
    env.setup_plain();
    let script = "import kubernetes\n\
        kubernetes.config.load_kube_config()\n\
        pods = kubernetes.client.CoreV1Api().list_namespaced_pod('dev')\n\
        print(' '.join(sorted(p.metadata.name for p in pods.items)))\n";
    let out = env
        .program("python3", &["-c", script])
        .env("KUBECONFIG", env.plain_kubeconfig())
        .success();
    assert!(out.contains("debug-shell"), "{out}");
    // The proxy commits a call's record a few milliseconds after it ends (its writer batches):
    // wait for this one.
    let rows = env.local_calls(&pods_listed(), 1);
    let list = rows
        .iter()
        .find(|r| r.call.verb == "list" && r.call.resource == "pods")
        .unwrap_or_else(|| panic!("no list pods in {rows:#?}"));
    // Not kubectl: no command, recorded by its user agent as an API client.
    assert_eq!(list.call.command_id, None);
    assert!(
        list.call.user_agent.starts_with("OpenAPI-Generator"),
        "{:?}",
        list.call.user_agent
    );
    assert_eq!(list.call.access_method, ztk::audit::AccessMethod::Api);
    assert_eq!(list.call.user, "alice");
    assert_eq!(list.call.status, 200);
}

#[test]
fn the_proxy_refuses_and_records_calls_without_a_valid_credential() {
    let env = Env::start();
    env.setup_plain();
    env.plain("kubectl", &["get", "ns"]).success();
    // The same server and CA, but a token the plugin never issued.
    let kubeconfig = std::fs::read_to_string(env.plain_kubeconfig()).unwrap();
    let forged = env.path("forged.yaml");
    let user_start = kubeconfig.find("users:").unwrap();
    let contexts_start = kubeconfig.find("contexts:").unwrap();
    write(
        &forged,
        &format!(
            "{}users:\n- name: ztk-sandbox\n  user:\n    token: ztk1_-_99999999999999999_00\n{}",
            &kubeconfig[..user_start],
            &kubeconfig[contexts_start..]
        ),
    );
    let (_, out) = env
        .program("kubectl", &["get", "ns"])
        .env("KUBECONFIG", &forged)
        .failure();
    assert!(
        out.contains("Unauthorized") || out.contains("must be logged in"),
        "{out}"
    );
    let refused = env.local_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(401)],
            ..Default::default()
        },
        1,
    );
    assert!(!refused.is_empty(), "the refusal is recorded");
    assert!(refused.iter().all(|r| r.call.decision == "unauthenticated"));
    assert!(refused.iter().all(|r| r.call.user == "alice"));
    // Nothing refused reached the gateway.
    let gw = env.gateway_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(401)],
            ..Default::default()
        },
        0,
    );
    assert!(gw.is_empty(), "{gw:#?}");
}

#[test]
fn the_plugin_without_a_login_says_to_log_in() {
    let env = Env::start();
    let out = env.ztk(&["credential", "--cluster", "sandbox"]).output();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ztk login"), "{stderr}");
    assert!(out.stdout.is_empty(), "no credential printed");
    // kubectl reports the plugin's failure.
    env.setup_plain();
    env.ztk(&["logout"]).success();
    let (_, out) = env.plain("kubectl", &["get", "ns"]).failure();
    assert!(out.contains("ztk login"), "{out}");
    assert!(out.contains("getting credentials"), "{out}");
}

#[test]
fn a_stale_pid_file_is_ignored_and_replaced() {
    let env = Env::start();
    env.setup_plain();
    let dir = env.path("client/data/proxy");
    std::fs::create_dir_all(&dir).unwrap();
    // A pid that cannot be a live proxy of ours: nobody holds the lock.
    write(&dir.join("proxy.pid"), "999999999\n");
    let (code, out) = env.ztk(&["proxy", "status"]).failure();
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not running"), "{out}");
    env.plain("kubectl", &["get", "ns"]).success();
    let pid = env.proxy_pid().unwrap();
    assert_ne!(pid, 999999999);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // A second proxy refuses to start beside the first.
    let (code, out) = env.ztk(&["proxy"]).failure();
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("already running (pid {pid})")),
        "{out}"
    );
}

#[test]
fn a_taken_port_is_reported() {
    let env = Env::start();
    env.login();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port().to_string();
    env.ztk(&["kubeconfig", "--port", &port]).success();
    let (_, out) = env.ztk(&["credential", "--cluster", "sandbox"]).failure();
    assert!(
        out.contains(&format!("port {port} on 127.0.0.1 is taken")),
        "{out}"
    );
    let (_, out) = env.plain("kubectl", &["get", "ns"]).failure();
    assert!(out.contains("is taken by another program"), "{out}");
    drop(squatter);
    env.plain("kubectl", &["get", "ns"]).success();
}

#[test]
fn merge_keeps_unrelated_contexts_and_makes_a_backup() {
    let env = Env::start();
    env.login();
    let kube = env.path("home/.kube");
    std::fs::create_dir_all(&kube).unwrap();
    let original = "apiVersion: v1\nkind: Config\npreferences:\n  colors: true\ncurrent-context: other\nclusters:\n- name: other\n  cluster:\n    server: https://10.1.2.3:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: other\n  user:\n    token: other-token\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\n    namespace: team\n";
    let config = kube.join("config");
    write(&config, original);
    let out = env.ztk(&["kubeconfig", "--merge"]).success();
    assert!(
        out.contains("ztk-sandbox") && out.contains("Backup"),
        "{out}"
    );
    let backups: Vec<_> = std::fs::read_dir(&kube)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("config.ztk-backup-")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(backups[0].path()).unwrap(),
        original
    );

    // The other context is untouched and still current; ztk's is usable by name.
    let view = env
        .program(
            "kubectl",
            &[
                "config",
                "view",
                "-o",
                "jsonpath={.current-context} {.contexts[*].name} {.preferences.colors}",
            ],
        )
        .env("KUBECONFIG", &config)
        .success();
    assert_eq!(view, "other other ztk-sandbox true");
    let merged = std::fs::read_to_string(&config).unwrap();
    assert!(
        merged.contains("other-token") && merged.contains("namespace: team"),
        "{merged}"
    );
    let pods = env
        .program(
            "kubectl",
            &["--context", "ztk-sandbox", "get", "po", "-n", "dev"],
        )
        .env("KUBECONFIG", &config)
        .success();
    assert!(pods.contains("debug-shell"), "{pods}");

    // Merging again replaces ztk's entries instead of adding copies.
    env.ztk(&["kubeconfig", "--merge"]).success();
    let again = std::fs::read_to_string(&config).unwrap();
    assert_eq!(again.matches("name: ztk-sandbox").count(), 3, "{again}");
    assert!(again.contains("other-token"));
}

#[test]
fn the_plugin_with_an_expired_session_says_so() {
    let env = Env::start_with("session_ttl = \"1s\"");
    env.setup_plain();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (code, out) = env.ztk(&["credential", "--cluster", "sandbox"]).failure();
    assert_eq!(code, 1);
    assert!(
        out.contains("expired") && out.contains("ztk login"),
        "{out}"
    );
    let (_, out) = env.plain("kubectl", &["get", "ns"]).failure();
    assert!(
        out.contains("expired") && out.contains("ztk login"),
        "{out}"
    );
}

/// The persistent proxy skips looking at the login for a second while one credential keeps
/// coming; a kubectl run after `ztk login` presents a new credential, so the new login counts
/// at once.
#[test]
fn a_new_login_counts_at_once_for_the_next_kubectl() {
    let env = Env::start();
    env.add_user("bob", &[]);
    env.role(&["bind", "view", "--user", "bob"]);
    env.setup_plain();
    let pods = env.plain("kubectl", &["get", "po", "-n", "dev"]).success();
    assert!(pods.contains("debug-shell"), "{pods}");
    env.login_as("bob");
    let pods = env.plain("kubectl", &["get", "po", "-n", "dev"]).success();
    assert!(pods.contains("debug-shell"), "{pods}");
    let bobs = Filter {
        users: vec!["bob".into()],
        ..pods_listed()
    };
    let rows = env.gateway_calls(&bobs, 1);
    assert_eq!(
        rows.len(),
        1,
        "bob's list reached the gateway as bob: {rows:#?}"
    );
    let alices = Filter {
        users: vec!["alice".into()],
        ..pods_listed()
    };
    assert_eq!(env.gateway_calls(&alices, 1).len(), 1);
}
