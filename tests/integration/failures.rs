//! Bad input and broken surroundings: clear errors, non-zero exits, and nothing lost.

use ztk::audit::Filter;

use crate::harness::*;

#[test]
fn wrong_password_is_refused() {
    let env = Env::start();
    let (code, out) = env
        .ztk(&[
            "login",
            "--gateway",
            &env.url,
            "--ca-file",
            env.ca_file().to_str().unwrap(),
            "--user",
            "alice",
            "--password-stdin",
        ])
        .stdin_text("wrong\n")
        .failure();
    assert_eq!(code, 1);
    assert!(out.contains("invalid user name or password"), "{out}");
    let (_, out) = env.kubectl(&["get", "po"]).failure();
    assert!(out.contains("ztk login"), "{out}");
}

#[test]
fn revoked_session_shows_the_login_hint_in_kubectl_and_is_audited() {
    let env = Env::start();
    env.login();
    env.kubectl(&["get", "ns"]).success();
    let out = env.gateway_cmd(&["session", "revoke", "alice"]).success();
    assert!(out.contains("revoked 1 session"), "{out}");
    let (code, out) = env.kubectl(&["get", "ns"]).failure();
    assert_eq!(code, 1, "ztk exits with kubectl's code");
    assert!(
        out.contains("your session was revoked; run `ztk login`"),
        "{out}"
    );
    let denied = env.gateway_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(401)],
            ..Default::default()
        },
        1,
    );
    assert!(!denied.is_empty());
    assert!(denied.iter().all(|r| r.call.decision == "unauthenticated"));
    // Logging in again restores access.
    env.login();
    env.kubectl(&["get", "ns"]).success();
}

#[test]
fn expired_session_is_refused() {
    let env = Env::start_with("session_ttl = \"1s\"");
    env.login();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (_, out) = env.kubectl(&["get", "ns"]).failure();
    assert!(
        out.contains("expired") && out.contains("ztk login"),
        "{out}"
    );
    let (_, status) = env.ztk(&["status"]).failure();
    assert!(status.contains("expired"), "{status}");
}

#[test]
fn unreachable_gateway_and_unknown_cluster() {
    let mut env = Env::start();
    env.login();
    let (code, out) = env.kubectl(&["--cluster", "nope", "get", "po"]).failure();
    assert_eq!(code, 1);
    assert!(
        out.contains("no cluster \"nope\"") && out.contains("sandbox"),
        "{out}"
    );

    env.stop_gateway();
    let (_, out) = env.kubectl(&["get", "po"]).failure();
    assert!(
        out.contains("Warning: ztk: cannot reach the gateway at https://127.0.0.1:"),
        "{out}"
    );
    // The command is still in the local log, waiting to be shipped.
    let local = env.local_store();
    let pending = local.outbox_batch("alice", 10).unwrap();
    assert_eq!(pending.commands.len(), 1);

    let (code, out) = env
        .ztk(&[
            "login",
            "--gateway",
            "https://127.0.0.1:1",
            "--user",
            "alice",
            "--password-stdin",
        ])
        .stdin_text("x\n")
        .failure();
    assert_eq!(code, 1);
    assert!(
        out.contains("cannot reach the gateway at https://127.0.0.1:1"),
        "{out}"
    );
    let (code, out) = env
        .ztk(&[
            "login",
            "--gateway",
            "http://127.0.0.1:1",
            "--user",
            "a",
            "--password-stdin",
        ])
        .stdin_text("x\n")
        .failure();
    assert_eq!(code, 1);
    assert!(out.contains("https://"), "{out}");
}

#[test]
fn malformed_gateway_configs_fail_at_start_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = 5\ndata_dir = \"d\"", "listen"),
        (
            "data_dir = \"d\"\n[[clusters]]\nname = \"x\"\nkubeconfig = \"missing.yaml\"",
            "missing.yaml",
        ),
        (
            "data_dir = \"d\"\n[[clusters]]\nname = \"x\"",
            "clusters[0]",
        ),
        ("data_dir = \"d\"\nsession_ttl = \"soon\"", "session_ttl"),
        ("data_dir = [", "gateway.toml"),
    ];
    for (text, want) in cases {
        let path = dir.path().join("gateway.toml");
        write(&path, text);
        let out = std::process::Command::new(ztk_bin())
            .args(["gateway", "serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(
            err.contains("gateway.toml") && err.contains(want),
            "{text}: {err}"
        );
    }
}

#[test]
fn kubectl_flags_that_bypass_ztk_are_refused() {
    let env = Env::start();
    env.login();
    let (code, out) = env
        .kubectl(&["--kubeconfig", "/tmp/x", "get", "po"])
        .failure();
    assert_eq!(code, 2);
    assert!(out.contains("--kubeconfig"), "{out}");
}
