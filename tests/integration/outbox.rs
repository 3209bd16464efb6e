//! Shipping under faults: the outbox, the ingest endpoint, kills at random points, a full or
//! read-only local store. Exactly once is checked by comparing ids, not only counts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use uuid::Uuid;
use ztk::audit::{ApiCall, Command, Filter};
use ztk::protocol::{IngestBatch, INGEST_VERSION};

use crate::harness::*;

/// Ids in a store's table, ordered by its write sequence.
fn ids(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id FROM {table} ORDER BY {}",
            if table == "client_calls" { "id" } else { "seq" }
        ))
        .unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn client_db(env: &Env) -> std::path::PathBuf {
    env.path("client/data/audit.db")
}

fn gateway_db(env: &Env) -> std::path::PathBuf {
    env.path("gw/audit.db")
}

/// Every client record (calls and commands) is at the gateway, once.
#[track_caller]
fn assert_exactly_once(env: &Env) {
    let client_calls = ids(&client_db(env), "api_calls");
    let gateway_calls = ids(&gateway_db(env), "client_calls");
    assert_eq!(
        gateway_calls.len(),
        client_calls.len(),
        "as many client calls at the gateway as in the client store"
    );
    assert_eq!(
        gateway_calls.iter().collect::<BTreeSet<_>>(),
        client_calls.iter().collect::<BTreeSet<_>>()
    );
    let client_cmds: BTreeSet<_> = ids(&client_db(env), "commands").into_iter().collect();
    let gateway_cmds = ids(&gateway_db(env), "commands");
    assert_eq!(gateway_cmds.len(), client_cmds.len());
    assert_eq!(
        gateway_cmds.into_iter().collect::<BTreeSet<_>>(),
        client_cmds
    );
}

fn pending(env: &Env) -> u64 {
    env.local_store().pending_count("alice").unwrap()
}

fn seed(env: &Env, count: u64) {
    env.ztk(&[
        "audit",
        "seed",
        "--count",
        &count.to_string(),
        "--user",
        "alice",
    ])
    .success();
}

#[test]
fn records_made_while_the_gateway_dies_arrive_once_after_it_restarts() {
    let mut env = Env::start();
    env.login();
    // kubectl makes its calls, then the gateway is stopped before ztk can ship them. Stopped,
    // not killed: its own records of those calls are still in its writer's queue for a
    // millisecond or two, and a kill -9 would take them along (the gateway-killed-during-ingest
    // test below covers kill -9). Until the gateway has exited (a zombie of this test), ztk waits.
    let script = env.path("kubectl-then-stop-gateway");
    let pid = env.gateway_pid().unwrap();
    write(
        &script,
        &format!(
            "#!/bin/sh\n/usr/bin/kubectl \"$@\" || exit $?\nkill -TERM {pid}\n\
             while [ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null; do sleep 0.05; done\n"
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env
        .ztk(&[
            "kubectl",
            "--kubectl",
            script.to_str().unwrap(),
            "get",
            "ns",
        ])
        .output();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("they are kept and sent later"), "{stderr}");
    let local = env.local_calls(&Filter::default(), 1);
    assert!(!local.is_empty());
    assert!(
        pending(&env) as usize > local.len(),
        "the calls and the command wait"
    );
    let status = env.ztk(&["audit", "status"]).success();
    assert!(status.contains("oldest pending:"), "{status}");
    assert!(
        status.contains("last error:") && !status.contains("last error:     none"),
        "{status}"
    );

    env.restart_gateway();
    let out = env.ztk(&["audit", "push"]).success();
    assert!(out.contains("0 pending"), "{out}");
    assert_exactly_once(&env);
    assert_eq!(pending(&env), 0);
    let out = env.ztk(&["audit", "push"]).success();
    assert!(out.contains("Nothing to ship"), "{out}");
    let status = env.ztk(&["audit", "status", "--json"]).success();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["pending_calls"], 0);
    assert!(status[0]["last_success_us"].as_i64().is_some());

    // The gateway's listing joins its records with the shipped ones: command line, both durations.
    let rows = env.gateway_calls(&Filter::default(), local.len());
    assert_eq!(rows.len(), local.len());
    for row in &rows {
        assert_eq!(row.command_line.as_deref(), Some("kubectl get ns"));
        assert!(row.client_duration_us.is_some() && row.gateway_duration_us.is_some());
    }
    // A second run ships at its exit, in its grace period.
    env.kubectl(&["get", "ns"]).success();
    assert_eq!(pending(&env), 0);
    assert_exactly_once(&env);
}

#[test]
fn kill_9_of_the_shipping_process_at_random_points_loses_and_repeats_nothing() {
    let env = Env::start();
    env.login();
    seed(&env, 20_000);
    let total = pending(&env);
    assert_eq!(total, 22_000);
    let mut rng = rand::thread_rng();
    let mut killed_midway = 0;
    for round in 0..4 {
        let before = pending(&env);
        let mut child = env
            .ztk(&["audit", "push"])
            .cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first round dies at a random moment of its start; later ones once a random
        // share of the rest has gone, plus a random bit more: inside a batch, or between.
        if round == 0 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
        } else {
            let target = before - rng.gen_range(1..before / 3);
            let deadline = Instant::now() + Duration::from_secs(10);
            while pending(&env) > target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let after = pending(&env);
        if after > 0 && after < before {
            killed_midway += 1;
        }
    }
    assert!(killed_midway >= 1, "no kill landed while shipping");
    eprintln!("push killed with records left and some shipped: {killed_midway} times");
    env.ztk(&["audit", "push"]).success();
    assert_eq!(pending(&env), 0);
    assert_exactly_once(&env);
}

#[test]
fn a_gateway_killed_during_ingest_shows_no_half_batch_and_gets_everything_once() {
    let mut env = Env::start();
    env.login();
    seed(&env, 20_000);
    let child = env
        .ztk(&["audit", "push"])
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the gateway once part of the backlog has arrived.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending(&env) > 15_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..30)));
    unsafe {
        libc::kill(env.gateway_pid().unwrap() as i32, libc::SIGKILL);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "push must fail when the gateway dies: {stderr}"
    );

    let mut client: Vec<(i64, String)> = Vec::new();
    let conn = rusqlite::Connection::open(client_db(&env)).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, id FROM api_calls UNION ALL SELECT seq, id FROM commands ORDER BY 1")
        .unwrap();
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap() {
        client.push(row.unwrap());
    }
    let at_gateway: BTreeSet<String> = ids(&gateway_db(&env), "client_calls")
        .into_iter()
        .chain(ids(&gateway_db(&env), "commands"))
        .collect();
    assert!(
        !at_gateway.is_empty() && at_gateway.len() < client.len(),
        "killed midway: {}",
        at_gateway.len()
    );
    // Batches are the backlog's records in write order, BATCH at a time (two may be in flight,
    // so not necessarily a prefix): each is entirely at the gateway or not at all.
    for (i, chunk) in client.chunks(ztk::client::shipper::BATCH).enumerate() {
        let there = chunk
            .iter()
            .filter(|(_, id)| at_gateway.contains(id))
            .count();
        assert!(
            there == 0 || there == chunk.len(),
            "batch {i}: {there} of {} records visible",
            chunk.len()
        );
    }
    env.restart_gateway();
    env.ztk(&["audit", "push"]).success();
    assert_exactly_once(&env);
}

fn batch(calls: Vec<ApiCall>, commands: Vec<Command>) -> IngestBatch {
    IngestBatch {
        version: INGEST_VERSION,
        batch_id: Uuid::now_v7(),
        commands,
        calls,
    }
}

fn call(user: &str) -> ApiCall {
    let id = Uuid::now_v7();
    ApiCall {
        id,
        request_id: Some(id),
        time_us: ztk::audit::model::now_us(),
        user: user.into(),
        cluster: "sandbox".into(),
        method: "GET".into(),
        path: "/api/v1/pods".into(),
        verb: "list".into(),
        resource: "pods".into(),
        status: 200,
        decision: "allow".into(),
        ..Default::default()
    }
}

fn count(env: &Env, table: &str) -> usize {
    ids(&gateway_db(env), table).len()
}

#[test]
fn repeated_invalid_and_foreign_batches() {
    let env = Env::start();
    env.add_user("bob", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = env.gateway_api();
    rt.block_on(async {
        let token = api
            .login("alice", PASSWORD, None)
            .await
            .unwrap()
            .token
            .unwrap();
        let cmd = Command {
            id: Uuid::now_v7(),
            started_us: ztk::audit::model::now_us(),
            user: "alice".into(),
            cluster: "sandbox".into(),
            argv: vec!["kubectl".into(), "get".into(), "po".into()],
            command_line: "kubectl get po".into(),
            ..Default::default()
        };
        let mut c = call("alice");
        c.command_id = Some(cmd.id);
        let first = batch(vec![c, call("alice")], vec![cmd]);
        // Sent twice, once in each encoding: stored once, acknowledged twice.
        let ack = api.ingest(&token, &first, true).await.unwrap();
        assert_eq!((ack.accepted, ack.written), (3, 3));
        let ack = api.ingest(&token, &first, false).await.unwrap();
        assert_eq!((ack.accepted, ack.written), (3, 0));
        assert_eq!(
            (count(&env, "client_calls"), count(&env, "commands")),
            (2, 1)
        );

        // One invalid record: 400 naming it, and its valid neighbour is not stored either.
        let mut bad = call("alice");
        bad.time_us = 0;
        let good = call("alice");
        let err = api
            .ingest(&token, &batch(vec![good, bad.clone()], vec![]), false)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("400")
                && text.contains(&bad.id.to_string())
                && text.contains("nothing was stored"),
            "{text}"
        );
        let mut v4 = call("alice");
        v4.id = Uuid::new_v4();
        v4.request_id = Some(v4.id);
        let err = api
            .ingest(&token, &batch(vec![v4], vec![]), true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UUIDv7"), "{err}");
        assert_eq!(count(&env, "client_calls"), 2);

        // A record claiming another user: 403, nothing stored; also Bob re-sending Alice's ids.
        let err = api
            .ingest(
                &token,
                &batch(vec![call("alice"), call("bob")], vec![]),
                false,
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("403") && err.to_string().contains("\"bob\""),
            "{err}"
        );
        let bob = api
            .login("bob", PASSWORD, None)
            .await
            .unwrap()
            .token
            .unwrap();
        let mut stolen = first.calls[0].clone();
        stolen.user = "bob".into();
        let err = api
            .ingest(&bob, &batch(vec![call("bob"), stolen], vec![]), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        assert_eq!(count(&env, "client_calls"), 2);

        // No session: 401.
        let err = api.ingest("nope", &first, false).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
    });
    // Malformed bodies and an old version: 400 with the reason.
    let client = |body: &str, content_type: &str| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let token = api
                .login("alice", PASSWORD, None)
                .await
                .unwrap()
                .token
                .unwrap();
            raw_post(&env, &token, body.as_bytes().to_vec(), content_type).await
        })
    };
    let (code, text) = client("{\"version\": 2, \"calls\": 5}", "application/json");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("invalid JSON batch"), "{text}");
    let (code, text) = client("{\"version\": 1, \"commands\": []}", "application/json");
    assert_eq!(code, 400);
    assert!(text.contains("version 1 is not supported"), "{text}");
    let (code, text) = client("\u{2}\u{ff}\u{ff}", ztk::protocol::INGEST_COMPACT);
    assert_eq!(code, 400, "{text}");
    let (code, _) = client("{}", "text/plain");
    assert_eq!(code, 415);
    assert_eq!(count(&env, "client_calls"), 2);
}

#[test]
fn nul_characters_and_oversized_fields_are_refused_and_the_clients_own_records_fit() {
    let env = Env::start();
    env.add_user("bob", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = env.gateway_api();
    rt.block_on(async {
        let token = api
            .login("alice", PASSWORD, None)
            .await
            .unwrap()
            .token
            .unwrap();
        let refused = |err: anyhow::Error, id: Uuid, field: &str| {
            let text = err.to_string();
            assert!(
                text.contains("400") && text.contains(&id.to_string()) && text.contains(field),
                "{text}"
            );
            assert!(
                !text.contains("hidden"),
                "the content is not echoed: {text}"
            );
            text
        };
        // A NUL in any string field: 400 naming the record and the field.
        let mut nul = call("alice");
        nul.reason = "hidden\0".into();
        let err = api
            .ingest(
                &token,
                &batch(vec![call("alice"), nul.clone()], vec![]),
                true,
            )
            .await
            .unwrap_err();
        refused(err.into(), nul.id, "reason");
        let cmd = Command {
            id: Uuid::now_v7(),
            started_us: ztk::audit::model::now_us(),
            user: "alice".into(),
            cluster: "sandbox".into(),
            argv: vec!["kubectl".into(), "hidden\0".into()],
            command_line: "kubectl get po".into(),
            ..Default::default()
        };
        let err = api
            .ingest(&token, &batch(vec![], vec![cmd.clone()]), false)
            .await
            .unwrap_err();
        refused(err.into(), cmd.id, "argv[1]");
        // Fields beyond their limits: 400 naming the field and the limit.
        let mut long = call("alice");
        long.user_agent = "hidden".repeat(2000);
        let err = api
            .ingest(&token, &batch(vec![long.clone()], vec![]), true)
            .await
            .unwrap_err();
        let text = refused(err.into(), long.id, "user_agent");
        assert!(text.contains("8192"), "{text}");
        let many = Command {
            id: Uuid::now_v7(),
            argv: vec!["a".into(); 1025],
            ..cmd.clone()
        };
        let err = api
            .ingest(&token, &batch(vec![], vec![many.clone()]), true)
            .await
            .unwrap_err();
        let text = refused(err.into(), many.id, "argv");
        assert!(text.contains("1024"), "{text}");
        assert_eq!(
            (count(&env, "client_calls"), count(&env, "commands")),
            (0, 0)
        );

        // An id of Alice's re-used by Bob: 403, without saying whose it is.
        let first = call("alice");
        api.ingest(&token, &batch(vec![first.clone()], vec![]), true)
            .await
            .unwrap();
        let bob = api
            .login("bob", PASSWORD, None)
            .await
            .unwrap()
            .token
            .unwrap();
        let stolen = ApiCall {
            user: "bob".into(),
            ..first
        };
        let err = api
            .ingest(&bob, &batch(vec![stolen], vec![]), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("403") && err.contains("another user's record") && !err.contains("alice"),
            "{err}"
        );
    });

    // The client's own records of an over-long command line are cut to the limits, marked,
    // and accepted: 1,100 arguments, and one argument of 70,000 bytes.
    env.login();
    let many: Vec<String> = (0..1100).map(|i| format!("a{i}")).collect();
    let mut args = vec!["version", "--client"];
    args.extend(many.iter().map(String::as_str));
    let _ = env.kubectl(&args).output();
    let long = "x".repeat(70_000);
    let _ = env.kubectl(&["version", "--client", &long]).output();
    env.ztk(&["audit", "push"]).success();
    assert_eq!(env.local_store().pending_count("alice").unwrap(), 0);
    let conn = rusqlite::Connection::open(gateway_db(&env)).unwrap();
    let mut stmt = conn
        .prepare("SELECT argv, command_line FROM commands WHERE user = 'alice' ORDER BY started_us")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "both commands reached the gateway");
    let argv: Vec<String> = serde_json::from_str(&rows[0].0).unwrap();
    assert_eq!(argv.len(), 1024);
    assert_eq!(argv[1023], "…[truncated 80 arguments]");
    let argv: Vec<String> = serde_json::from_str(&rows[1].0).unwrap();
    assert!(
        argv[3].contains("…[truncated "),
        "{}",
        &argv[3][argv[3].len() - 40..]
    );
    assert!(rows[1].1.len() <= 64 * 1024 && rows[1].1.contains("…[truncated "));
}

/// POSTs raw bytes to the ingest endpoint; returns the status and body.
async fn raw_post(env: &Env, token: &str, body: Vec<u8>, content_type: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = https_client(std::fs::read(env.ca_file()).unwrap());
    let req = http::Request::post(format!("{}{}", env.url, ztk::protocol::INGEST_PATH))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// None when this machine does not let the test mount (not root).
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }

    fn remount(&self, mode: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn set_mode(env: &Env, mode: &str) {
    let path = env.path("client/config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = match text.find("[audit]") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    write(&path, &format!("{text}\n[audit]\nmode = \"{mode}\"\n"));
}

/// The store's own check, and the calls it holds.
fn intact_calls(env: &Env) -> usize {
    let conn = rusqlite::Connection::open(client_db(env)).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    ids(&client_db(env), "api_calls").len()
}

#[test]
fn a_full_or_read_only_store_fails_closed_or_warns_and_keeps_what_it_had() {
    let env = Env::start();
    let Some(fs) = Tmpfs::mount(&env.path("client/data"), "4m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    env.login();
    env.kubectl(&["get", "ns"]).success();
    let stored = intact_calls(&env);
    assert!(stored > 0);

    // Full: fill the filesystem to the last byte.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(env.path("client/data/filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while filler.write_all(&chunk).is_ok() {}
        while filler.write_all(&[0]).is_ok() {}
    }
    for round in ["full", "read-only"] {
        set_mode(&env, "best-effort");
        let out = env.kubectl(&["get", "ns"]).output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{round}, best-effort: {stderr}");
        assert!(
            stderr.contains("ztk: warning:") && stderr.contains("running kubectl anyway"),
            "{round}: {stderr}"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("default"));

        set_mode(&env, "fail-closed");
        let (code, text) = env.kubectl(&["get", "ns"]).failure();
        assert_eq!(code, 1);
        assert!(
            text.contains("fail-closed") && text.contains("audit store"),
            "{round}: {text}"
        );
        assert!(!text.contains("default"), "kubectl did not run: {text}");
        if round == "full" {
            fs.remount("ro");
            std::fs::remove_file(env.path("client/data/filler")).unwrap_err();
        }
    }
    fs.remount("rw");
    std::fs::remove_file(env.path("client/data/filler")).unwrap();
    assert_eq!(
        intact_calls(&env),
        stored,
        "nothing stored before was damaged"
    );
    // And it works again, fail-closed: every call's record committed before it was forwarded,
    // then replaced by its final record.
    env.kubectl(&["get", "ns"]).success();
    assert!(intact_calls(&env) > stored);
    let rows = env.local_store().list_calls(&Filter::default()).unwrap();
    assert!(
        rows.iter().all(|r| r.call.reason != "in progress"),
        "{rows:?}"
    );
    assert_eq!(pending(&env), 0, "and shipped");
}

#[test]
fn retention_drops_only_shipped_records_and_the_chain_still_verifies() {
    let mut env = Env::start();
    env.login();
    let path = env.path("client/config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    write(
        &path,
        &format!("{text}\n[audit]\nretention_max_age = \"1s\"\n"),
    );
    env.kubectl(&["get", "ns"]).success();
    let first = ids(&client_db(&env), "api_calls");
    assert!(!first.is_empty());
    std::thread::sleep(Duration::from_millis(1200));
    // The gateway is down for this run: its records stay local, whatever their age.
    env.stop_gateway();
    env.kubectl(&["get", "ns"]).failure();
    let kept = ids(&client_db(&env), "api_calls");
    let unshipped: BTreeSet<_> = kept
        .iter()
        .filter(|id| !first.contains(id))
        .cloned()
        .collect();
    assert!(!unshipped.is_empty());
    assert!(
        first.iter().all(|id| !kept.contains(id)),
        "shipped and old: dropped"
    );
    std::thread::sleep(Duration::from_millis(1200));
    env.restart_gateway();
    env.kubectl(&["get", "ns"]).success();
    let now = ids(&client_db(&env), "api_calls");
    assert!(
        unshipped.iter().all(|id| !now.contains(id)),
        "shipped by this run, then old enough to go"
    );
    let at_gateway: BTreeSet<_> = ids(&gateway_db(&env), "client_calls").into_iter().collect();
    assert!(first
        .iter()
        .chain(&unshipped)
        .all(|id| at_gateway.contains(id)));
    let report = env.local_store().verify(&[]).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
