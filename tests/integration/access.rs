//! Access control through the real kubectl: a table of users, roles and requests, enforced by
//! the gateway and audited, and `ztk access can-i`/`who-can` agreeing with every row.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ztk::audit::{CallRow, Filter};

use crate::harness::*;

/// A custom role: `imp` may impersonate the user `viewer`, nobody else.
const ROLES: &str = "[[roles]]\nname = \"impersonate-viewer\"\n[[roles.rules]]\napi_groups = [\"\"]\nresources = [\"users\"]\nresource_names = [\"viewer\"]\nverbs = [\"impersonate\"]\n";

/// One question to `can-i`: (user, verb, resource, name, namespace).
type Check = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

struct Row {
    user: &'static str,
    args: &'static [&'static str],
    allowed: bool,
    /// The request is allowed iff every check is.
    checks: &'static [Check],
}

const TABLE: &[Row] = &[
    // viewer: role view in namespace dev of cluster sandbox only.
    Row {
        user: "viewer",
        args: &["get", "pods", "-n", "dev"],
        allowed: true,
        checks: &[("viewer", "list", "pods", "", "dev")],
    },
    Row {
        user: "viewer",
        args: &["logs", "debug-shell", "-n", "dev"],
        allowed: true,
        checks: &[("viewer", "get", "pods/log", "debug-shell", "dev")],
    },
    Row {
        user: "viewer",
        args: &["get", "pods", "-n", "prod"],
        allowed: false,
        checks: &[("viewer", "list", "pods", "", "prod")],
    },
    Row {
        user: "viewer",
        args: &["get", "secrets", "-n", "dev"],
        allowed: false,
        checks: &[("viewer", "list", "secrets", "", "dev")],
    },
    Row {
        user: "viewer",
        args: &["get", "pods", "-A"],
        allowed: false,
        checks: &[("viewer", "list", "pods", "", "")],
    },
    Row {
        user: "viewer",
        args: &["get", "namespaces"],
        allowed: false,
        checks: &[("viewer", "list", "namespaces", "", "")],
    },
    Row {
        user: "viewer",
        args: &["exec", "debug-shell", "-n", "dev", "--", "true"],
        allowed: false,
        checks: &[("viewer", "create", "pods/exec", "debug-shell", "dev")],
    },
    Row {
        user: "viewer",
        args: &["port-forward", "pod/debug-shell", "-n", "dev", "0:80"],
        allowed: false,
        checks: &[("viewer", "create", "pods/portforward", "debug-shell", "dev")],
    },
    Row {
        user: "viewer",
        args: &["get", "pods", "-n", "dev", "--as", "alice"],
        allowed: false,
        checks: &[("viewer", "impersonate", "users", "alice", "")],
    },
    // alice: role edit everywhere (the harness binds it).
    Row {
        user: "alice",
        args: &["get", "pods", "-A"],
        allowed: true,
        checks: &[("alice", "list", "pods", "", "")],
    },
    Row {
        user: "alice",
        args: &["get", "secrets", "-n", "prod"],
        allowed: true,
        checks: &[("alice", "list", "secrets", "", "prod")],
    },
    Row {
        user: "alice",
        args: &["exec", "debug-shell", "-n", "dev", "--", "true"],
        allowed: true,
        checks: &[("alice", "create", "pods/exec", "debug-shell", "dev")],
    },
    Row {
        user: "alice",
        args: &["get", "rolebindings", "-n", "dev"],
        allowed: false,
        checks: &[(
            "alice",
            "list",
            "rolebindings.rbac.authorization.k8s.io",
            "",
            "dev",
        )],
    },
    Row {
        user: "alice",
        args: &["get", "nodes"],
        allowed: false,
        checks: &[("alice", "list", "nodes", "", "")],
    },
    // dana: group ops has role admin in namespace prod.
    Row {
        user: "dana",
        args: &["get", "rolebindings", "-n", "prod"],
        allowed: true,
        checks: &[(
            "dana",
            "list",
            "rolebindings.rbac.authorization.k8s.io",
            "",
            "prod",
        )],
    },
    Row {
        user: "dana",
        args: &["get", "secrets", "-n", "prod"],
        allowed: true,
        checks: &[("dana", "list", "secrets", "", "prod")],
    },
    Row {
        user: "dana",
        args: &["get", "secrets", "-n", "dev"],
        allowed: false,
        checks: &[("dana", "list", "secrets", "", "dev")],
    },
    // newbie: no binding at all.
    Row {
        user: "newbie",
        args: &["get", "pods", "-n", "dev"],
        allowed: false,
        checks: &[("newbie", "list", "pods", "", "dev")],
    },
    // imp: may impersonate viewer only, and has no other rights of its own.
    Row {
        user: "imp",
        args: &["get", "pods", "-n", "dev", "--as", "viewer"],
        allowed: true,
        checks: &[
            ("imp", "impersonate", "users", "viewer", ""),
            ("viewer", "list", "pods", "", "dev"),
        ],
    },
    Row {
        user: "imp",
        args: &["get", "pods", "-n", "prod", "--as", "viewer"],
        allowed: false,
        checks: &[
            ("imp", "impersonate", "users", "viewer", ""),
            ("viewer", "list", "pods", "", "prod"),
        ],
    },
    Row {
        user: "imp",
        args: &["get", "pods", "-n", "dev", "--as", "alice"],
        allowed: false,
        checks: &[("imp", "impersonate", "users", "alice", "")],
    },
    Row {
        user: "imp",
        args: &[
            "get",
            "pods",
            "-n",
            "dev",
            "--as",
            "viewer",
            "--as-group",
            "system:masters",
        ],
        allowed: false,
        checks: &[
            ("imp", "impersonate", "users", "viewer", ""),
            ("imp", "impersonate", "groups", "system:masters", ""),
        ],
    },
    Row {
        user: "imp",
        args: &["get", "pods", "-n", "dev"],
        allowed: false,
        checks: &[("imp", "list", "pods", "", "dev")],
    },
    // root: cluster-admin.
    Row {
        user: "root",
        args: &["get", "nodes"],
        allowed: true,
        checks: &[("root", "list", "nodes", "", "")],
    },
];

/// The gateway's records of the latest `ztk kubectl` run (joined through the command id).
fn gateway_rows_of_last_command(env: &Env) -> Vec<CallRow> {
    let local = env.local_store().list_calls(&Filter::default()).unwrap();
    let last = local
        .iter()
        .max_by_key(|r| r.call.time_us)
        .expect("the command made no call");
    let command_id = last.call.command_id;
    let expected = local
        .iter()
        .filter(|r| r.call.command_id == command_id)
        .count();
    env.gateway_calls(
        &Filter {
            command_id,
            ..Default::default()
        },
        expected,
    )
}

fn access_env() -> Env {
    let env = Env::start_with(ROLES);
    for (user, groups) in [
        ("viewer", &[][..]),
        ("dana", &["ops"][..]),
        ("newbie", &[][..]),
        ("imp", &[][..]),
        ("root", &["admins"][..]),
    ] {
        env.add_user(user, groups);
    }
    env.role(&[
        "bind",
        "view",
        "--user",
        "viewer",
        "--cluster",
        "sandbox",
        "--namespace",
        "dev",
    ]);
    env.role(&["bind", "admin", "--group", "ops", "--namespace", "prod"]);
    env.role(&["bind", "impersonate-viewer", "--user", "imp"]);
    env.role(&["bind", "cluster-admin", "--group", "admins"]);
    env
}

#[test]
fn table_of_users_roles_and_requests_through_real_kubectl() {
    let env = access_env();
    let mut current = "";
    for row in TABLE {
        if row.user != current {
            env.login_as(row.user);
            current = row.user;
        }
        let out = env.kubectl(row.args).output();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let label = format!("{} kubectl {}", row.user, row.args.join(" "));
        let rows = gateway_rows_of_last_command(&env);
        assert!(!rows.is_empty(), "{label}: no gateway record");
        assert!(rows.iter().all(|r| r.call.user == row.user), "{label}");
        let denied: Vec<&CallRow> = rows.iter().filter(|r| r.call.decision == "deny").collect();
        if row.allowed {
            assert!(denied.is_empty(), "{label}: denied: {:#?}", denied);
            // The sandbox runs no containers: exec reaches it (allowed) and fails there.
            if row.args[0] != "exec" {
                assert!(out.status.success(), "{label}: {text}");
            }
            if row.args.contains(&"--as") {
                assert!(
                    rows.iter().all(|r| r.call.reason.contains("impersonating")),
                    "{label}: impersonation not audited: {rows:#?}"
                );
            }
        } else {
            assert!(!out.status.success(), "{label} succeeded: {text}");
            assert!(!denied.is_empty(), "{label}: no deny record");
            let reason = &denied[0].call.reason;
            assert_eq!(denied[0].call.status, 403, "{label}");
            assert!(
                reason.contains("missing rule {verbs=["),
                "{label}: reason does not name the missing rule: {reason}"
            );
            assert!(
                text.contains("ztk: forbidden:"),
                "{label}: kubectl did not show the refusal: {text}"
            );
        }
    }

    // can-i and who-can, asked by an administrator, agree with enforcement on every row.
    env.login_as("root");
    for row in TABLE {
        let label = format!("{} kubectl {}", row.user, row.args.join(" "));
        let mut all = true;
        for (user, verb, resource, name, ns) in row.checks {
            let mut args = vec!["access", "can-i", verb, resource];
            if !name.is_empty() {
                args.push(name);
            }
            if !ns.is_empty() {
                args.extend_from_slice(&["-n", ns]);
            }
            let mut who_can = args.clone();
            who_can[1] = "who-can";
            args.extend_from_slice(&["--as", user]);
            let out = env.ztk(&args).output();
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let yes = match out.status.code() {
                Some(0) => true,
                Some(1) => false,
                other => panic!("{label}: can-i exited {other:?}: {answer}"),
            };
            assert_eq!(answer, if yes { "yes" } else { "no" }, "{label}");
            let listed = env.ztk(&who_can).success();
            let users = listed
                .lines()
                .find_map(|l| l.strip_prefix("Users: "))
                .unwrap_or("");
            assert_eq!(
                users.split(", ").any(|u| u == *user),
                yes,
                "{label}: who-can {verb} {resource} disagrees with can-i for {user}: {listed}"
            );
            all &= yes;
        }
        assert_eq!(
            all, row.allowed,
            "{label}: can-i disagrees with enforcement"
        );
    }
}

#[test]
fn can_i_for_oneself_status_roles_and_access_list() {
    let env = access_env();
    env.login_as("viewer");
    assert_eq!(
        env.ztk(&["access", "can-i", "list", "pods", "-n", "dev"])
            .success()
            .trim(),
        "yes"
    );
    let (code, out) = env
        .ztk(&["access", "can-i", "get", "secrets", "-n", "dev"])
        .failure();
    assert_eq!(code, 1);
    assert!(
        out.starts_with("no") && out.contains("missing rule"),
        "{out}"
    );
    // Short names resolve like kubectl's.
    assert_eq!(
        env.ztk(&["access", "can-i", "list", "deploy", "-n", "dev"])
            .success()
            .trim(),
        "yes"
    );
    // Asking for others, or who can, is for administrators.
    let (_, out) = env
        .ztk(&["access", "can-i", "list", "pods", "--as", "alice"])
        .failure();
    assert!(out.contains("impersonate verb"), "{out}");
    let (_, out) = env.ztk(&["access", "who-can", "list", "pods"]).failure();
    assert!(out.contains("impersonate verb"), "{out}");
    let (_, out) = env.ztk(&["access", "list", "--user", "alice"]).failure();
    assert!(out.contains("may not ask about user"), "{out}");

    let status = env.ztk(&["status"]).success();
    assert!(
        status.contains("Roles:    view on cluster sandbox, namespace dev (via user viewer)"),
        "{status}"
    );
    let list = env.ztk(&["access", "list"]).success();
    assert!(list.contains("User: viewer"), "{list}");
    assert!(list.contains("resources=[configmaps,endpoints"), "{list}");

    env.login_as("dana");
    let status = env.ztk(&["status"]).success();
    assert!(
        status.contains("admin on cluster *, namespace prod (via group ops)"),
        "{status}"
    );
    env.login_as("newbie");
    let status = env.ztk(&["status"]).success();
    assert!(status.contains("Roles:    none"), "{status}");
    let list = env.ztk(&["access", "list"]).success();
    assert!(list.contains("No role bindings"), "{list}");
    env.login_as("root");
    let list = env.ztk(&["access", "list", "--user", "dana"]).success();
    assert!(
        list.contains("User: dana (groups: ops)") && list.contains("rolebindings"),
        "{list}"
    );
    let (code, out) = env
        .ztk(&["access", "can-i", "get", "pods", "--cluster", "nope"])
        .failure();
    assert_eq!(code, 2);
    assert!(out.contains("no cluster \"nope\""), "{out}");
    let (code, out) = env.ztk(&["access", "can-i", "get", "a/b/c"]).failure();
    assert_eq!(code, 2);
    assert!(out.contains("is not a resource"), "{out}");
}

#[test]
fn bindings_take_effect_in_the_running_gateway_without_restart() {
    let env = access_env();
    env.login_as("newbie");
    let (_, out) = env.kubectl(&["get", "pods", "-n", "dev"]).failure();
    assert!(out.contains("no role bindings at all"), "{out}");

    env.role(&["bind", "view", "--user", "newbie", "--namespace", "dev"]);
    let bound = Instant::now();
    // can-i reads the same in-memory policy as enforcement: poll it for the switch.
    while env
        .ztk(&["access", "can-i", "list", "pods", "-n", "dev"])
        .output()
        .status
        .code()
        != Some(0)
    {
        assert!(
            bound.elapsed() < Duration::from_secs(5),
            "the binding did not take effect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("binding took effect after {:?}", bound.elapsed());
    let out = env.kubectl(&["get", "pods", "-n", "dev"]).success();
    assert!(out.contains("debug-shell"), "{out}");

    let listed = env.role(&["list"]);
    assert!(
        listed.contains("view") && listed.contains("user newbie"),
        "{listed}"
    );
    env.role(&["unbind", "view", "--user", "newbie", "--namespace", "dev"]);
    let unbound = Instant::now();
    while env
        .ztk(&["access", "can-i", "list", "pods", "-n", "dev"])
        .output()
        .status
        .code()
        != Some(1)
    {
        assert!(
            unbound.elapsed() < Duration::from_secs(5),
            "the unbinding did not take effect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    env.kubectl(&["get", "pods", "-n", "dev"]).failure();
}

#[test]
fn role_commands_refuse_bad_input_with_usage_errors() {
    let env = Env::start();
    for (args, want) in [
        (&["bind", "nope", "--user", "alice"][..], "no role \"nope\""),
        (
            &["bind", "view", "--user", "alice", "--cluster", "nope"][..],
            "no cluster \"nope\"",
        ),
        (
            &["bind", "view", "--user", "Bad Name"][..],
            "invalid user name",
        ),
        (
            &["bind", "view", "--user", "alice", "--namespace", "Bad_NS"][..],
            "invalid namespace",
        ),
        (&["bind", "view"][..], "--user"),
        (
            &["bind", "view", "--user", "a", "--group", "g"][..],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["role"];
        all.extend_from_slice(args);
        let (code, out) = env.gateway_cmd(&all).failure();
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
    }
    let (code, out) = env
        .gateway_cmd(&["role", "unbind", "view", "--user", "alice"])
        .failure();
    assert_eq!(code, 1);
    assert!(out.contains("no such binding"), "{out}");
    let again = env.role(&["bind", "edit", "--user", "alice"]);
    assert!(again.contains("already bound"), "{again}");
    let listed = env.role(&["list", "--rules"]);
    for role in ["view", "edit", "admin", "cluster-admin"] {
        assert!(listed.contains(&format!("  {role} (built-in")), "{listed}");
    }
}

#[test]
fn impersonating_cluster_gets_the_user_and_groups_and_the_sandbox_sees_them() {
    let env = Env::start_in(
        tempfile::tempdir().unwrap(),
        ROLES,
        "[[clusters]]\nname = \"imp\"\nsandbox = true\nimpersonate = true\n",
    );
    env.add_user("imp", &[]);
    env.add_user("viewer", &["readers", "qa"]);
    env.role(&["bind", "view", "--user", "viewer"]);
    env.role(&["bind", "impersonate-viewer", "--user", "imp"]);
    env.login();
    let whoami = |cluster: &str| {
        let out = env
            .kubectl(&["--cluster", cluster, "auth", "whoami", "-o", "json"])
            .success();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["status"]["userInfo"].clone()
    };
    // The impersonating cluster sees alice and all her groups; the other, the gateway's own
    // credential.
    let info = whoami("imp");
    assert_eq!(info["username"], "alice");
    assert_eq!(
        info["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );
    assert_eq!(whoami("sandbox")["username"], "sandbox-user");
    // A client's own Impersonate-* headers never reach an impersonating cluster: a granted
    // `--as` is replaced by the impersonated identity, exactly as decided.
    env.login_as("imp");
    let out = env
        .kubectl(&[
            "--cluster",
            "imp",
            "auth",
            "whoami",
            "-o",
            "json",
            "--as",
            "viewer",
        ])
        .success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "viewer");
    assert_eq!(
        v["status"]["userInfo"]["groups"],
        serde_json::json!(["system:authenticated"])
    );
    let (_, out) = env
        .kubectl(&[
            "--cluster",
            "imp",
            "auth",
            "whoami",
            "--as",
            "viewer",
            "--as-group",
            "qa",
        ])
        .failure();
    assert!(out.contains("may not impersonate group \"qa\""), "{out}");
}

#[test]
fn revoked_session_loses_its_open_watch_within_seconds() {
    let env = Env::start();
    env.login();
    let mut cmd = env.kubectl(&["get", "pods", "-n", "dev", "-w"]).cmd;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no watch output");
    assert!(
        first.contains("NAME") || first.contains("debug-shell"),
        "{first}"
    );
    // The watch is open: kubectl still runs.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the watch ended on its own"
    );

    env.gateway_cmd(&["session", "revoke", "alice"]).success();
    let revoked = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if revoked.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the watch of a revoked session stayed open");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = revoked.elapsed();
    eprintln!("revoked watch closed after {took:?} ({status})");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let rows = env.gateway_calls(
        &Filter {
            verbs: vec!["watch".into()],
            ..Default::default()
        },
        1,
    );
    assert!(
        rows.iter()
            .any(|r| r.call.reason.contains("closed by the gateway")),
        "{rows:#?}"
    );
}

#[test]
fn sessions_per_user_are_limited() {
    let env = Env::start_with("max_sessions_per_user = 2");
    // Each client (its own config dir) holds one session; logging in again replaces it.
    let client = |dir: &str| {
        env.login_cmd("alice")
            .env("ZTK_CONFIG_DIR", env.path(dir))
            .env("ZTK_DATA_DIR", env.path(&format!("{dir}-data")))
    };
    env.login();
    client("second").success();
    let (_, out) = client("third").failure();
    assert!(out.contains("max_sessions_per_user"), "{out}");
    // Logging out frees a slot.
    env.ztk(&["logout"]).success();
    client("third").success();
}

#[test]
fn revoked_session_loses_its_open_exec_stream_within_seconds() {
    let env = Env::start();
    env.login();
    // `cat` with stdin held open keeps the exec stream open until someone closes it.
    let mut child = env
        .kubectl(&["exec", "-i", "debug-shell", "-n", "dev", "--", "cat"])
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    use std::io::Write as _;
    writeln!(stdin, "still here").unwrap();
    stdin.flush().unwrap();
    // The sandbox's `cat` answers at the end of its input: until then the stream stays open.
    // Wait until the gateway has the stream's opening record, then check kubectl still runs.
    let opened = Instant::now();
    while !env
        .gateway_store()
        .list_calls(&Filter {
            resources: vec!["pods/exec".into()],
            ..Default::default()
        })
        .unwrap()
        .iter()
        .any(|r| r.call.reason == "stream open")
    {
        assert!(
            opened.elapsed() < Duration::from_secs(20),
            "the exec stream never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the exec ended on its own"
    );
    drop(rx);

    env.gateway_cmd(&["session", "revoke", "alice"]).success();
    let revoked = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if revoked.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the exec stream of a revoked session stayed open");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = revoked.elapsed();
    eprintln!("revoked exec closed after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(stdin);
    let rows = env.gateway_calls(
        &Filter {
            resources: vec!["pods/exec".into()],
            ..Default::default()
        },
        1,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rows = rows;
    while !rows
        .iter()
        .any(|r| r.call.reason.contains("closed by the gateway"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        rows = env.gateway_calls(
            &Filter {
                resources: vec!["pods/exec".into()],
                ..Default::default()
            },
            1,
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.call.status == 101 && r.call.reason.contains("closed by the gateway")),
        "{rows:#?}"
    );
}

/// What kubectl reads before any request: discovery.
const DISCOVERY: &str = "[[roles.rules]]\nnon_resource_urls = [\"/api\", \"/api/*\", \"/apis\", \"/apis/*\", \"/version\"]\nverbs = [\"get\"]\n";

/// `ztk gateway role apply`: a custom role stored in the gateway's database reaches the
/// running gateway within a second (as bindings do), changes with the next apply, and stops
/// granting when deleted. A role named like a built-in or a config role, or with a bad rule,
/// is refused with a usage error.
#[test]
fn stored_roles_take_effect_in_the_running_gateway() {
    let env = access_env();
    env.login_as("newbie");
    let roles = env.path("roles.toml");
    write(
        &roles,
        &format!(
            "[[roles]]\nname = \"cm-reader\"\n[[roles.rules]]\napi_groups = [\"\"]\n\
             resources = [\"configmaps\"]\nverbs = [\"get\", \"list\"]\n{DISCOVERY}"
        ),
    );
    let out = env
        .gateway_cmd(&["role", "apply", "-f", roles.to_str().unwrap()])
        .success();
    assert!(out.contains("stored role cm-reader (2 rules)"), "{out}");
    env.role(&[
        "bind",
        "cm-reader",
        "--user",
        "newbie",
        "--namespace",
        "dev",
    ]);
    let can = |what: &str| {
        env.ztk(&["access", "can-i", "list", what, "-n", "dev"])
            .output()
            .status
            .code()
    };
    let until = |want: Option<i32>, what: &str| {
        let start = Instant::now();
        while can(what) != want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{what}: not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until(Some(0), "configmaps");
    env.kubectl(&["get", "configmaps", "-n", "dev"]).success();
    assert_eq!(can("pods"), Some(1));
    let listed = env.role(&["list"]);
    assert!(listed.contains("cm-reader (stored, 2 rules)"), "{listed}");

    // Changed: pods too, live.
    write(
        &roles,
        &format!(
            "[[roles]]\nname = \"cm-reader\"\n[[roles.rules]]\napi_groups = [\"\"]\n\
             resources = [\"configmaps\", \"pods\"]\nverbs = [\"get\", \"list\"]\n{DISCOVERY}"
        ),
    );
    env.gateway_cmd(&["role", "apply", "-f", roles.to_str().unwrap()])
        .success();
    until(Some(0), "pods");
    env.kubectl(&["get", "pods", "-n", "dev"]).success();

    // Deleted: its binding grants nothing.
    let out = env.gateway_cmd(&["role", "delete", "cm-reader"]).success();
    assert!(out.contains("deleted role cm-reader"), "{out}");
    until(Some(1), "configmaps");
    let (code, _) = env.gateway_cmd(&["role", "delete", "cm-reader"]).failure();
    assert_eq!(code, 1);

    // Refused: a built-in name, a config role's name, a bad verb.
    for (text, expect) in [
        ("[[roles]]\nname = \"view\"\n[[roles.rules]]\nresources = [\"pods\"]\nverbs = [\"get\"]\n", "built-in"),
        ("[[roles]]\nname = \"impersonate-viewer\"\n[[roles.rules]]\nresources = [\"pods\"]\nverbs = [\"get\"]\n", "config"),
        ("[[roles]]\nname = \"x\"\n[[roles.rules]]\nresources = [\"pods\"]\nverbs = [\"get\"]\n", "api_groups"),
    ] {
        write(&roles, text);
        let (code, err) = env
            .gateway_cmd(&["role", "apply", "-f", roles.to_str().unwrap()])
            .failure();
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expect), "{err}");
    }
}
