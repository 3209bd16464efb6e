//! A call the cluster executed is never missing from the gateway's trail: the gateway is
//! `kill -9`ed while its own records of answered calls wait in its writer's queue (its store
//! held by another process's write lock, so they cannot be committed), and after a restart
//! the calls appear, recovered from the client's shipped records, exactly once.

use std::time::{Duration, Instant};

use crate::harness::Env;
use ztk::audit::Filter;

#[test]
fn calls_whose_gateway_record_died_with_the_gateway_are_recovered_from_the_client() {
    let mut env = Env::start_with("audit_reconcile_after = \"1s\"");
    env.login();
    // A command on record the normal way: every one of its calls committed at the gateway
    // before the store is locked (else one still queued would die too, and be recovered
    // without belonging to the command whose records this test takes away).
    env.kubectl(&["get", "ns"]).success();
    let first = env.local_calls(&Filter::default(), 1).len();
    let before = env.gateway_calls(&Filter::default(), first).len();
    assert!(before >= first, "{before} of {first} calls at the gateway");

    // Another process holds the gateway's store: its writer cannot commit.
    let lock = rusqlite::Connection::open(env.path("gw/audit.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = env.kubectl(&["get", "pods", "-n", "dev"]).output();
    assert!(out.status.success(), "{out:?}");
    // The gateway dies with those records in its queue.
    let pid = env.gateway_pid().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(200));
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // Every call of that command (its discovery too) lost its gateway record.
    let local = env.local_calls(&Filter::default(), 1);
    let pods = local
        .iter()
        .find(|c| c.call.namespace == "dev" && c.call.resource == "pods")
        .expect("the pods call on the client");
    let lost: Vec<_> = local
        .iter()
        .filter(|c| c.call.command_id == pods.call.command_id)
        .cloned()
        .collect();
    let store = env.gateway_store();
    let has = |id: uuid::Uuid| {
        store
            .list_calls(&Filter::default())
            .unwrap()
            .into_iter()
            .filter(|g| g.call.request_id == Some(id))
            .count()
    };
    assert!(
        lost.iter().all(|c| has(c.call.id) == 0),
        "the gateway's records were really lost"
    );

    env.restart_gateway();
    env.ztk(&["audit", "push"]).success();
    // Recovered within a few seconds (reconcile_after 1 s), each exactly once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while lost.iter().any(|c| has(c.call.id) == 0) {
        assert!(Instant::now() < deadline, "not recovered in time");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let calls = store.list_calls(&Filter::default()).unwrap();
    for c in &lost {
        let mine: Vec<_> = calls
            .iter()
            .filter(|g| g.call.request_id == Some(c.call.id))
            .collect();
        assert_eq!(mine.len(), 1, "exactly once: {mine:#?}");
        let g = &mine[0].call;
        assert!(
            g.reason.contains("recovered from the client's record"),
            "{g:?}"
        );
        assert_eq!(
            (g.status, g.user.as_str(), g.verb.as_str()),
            (c.call.status, "alice", c.call.verb.as_str())
        );
        assert_eq!(g.command_id, c.call.command_id);
    }
    // Calls that kept their gateway record were not recovered a second time.
    assert_eq!(
        calls
            .iter()
            .filter(|g| g.call.reason.contains("recovered from the client's record"))
            .count(),
        lost.len()
    );
    let verify = env.gateway_cmd(&["audit", "verify"]).success();
    assert!(
        verify.to_lowercase().contains("ok") || verify.contains("intact"),
        "{verify}"
    );
}

/// `audit_mode = "strict"`: each call's record is committed before the call is forwarded, so a
/// call that is still running (a watch) is on disk, and stays there when the gateway dies.
#[test]
fn strict_mode_commits_the_record_before_the_call_is_forwarded() {
    let mut env = Env::start_with("audit_mode = \"strict\"");
    env.login();
    env.kubectl(&["get", "ns"]).success();
    let mut watch = env.kubectl(&["get", "pods", "-n", "dev", "-w"]).cmd;
    let mut child = watch
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = env.gateway_store();
    let watching = || {
        store
            .list_calls(&Filter::default())
            .unwrap()
            .into_iter()
            .find(|c| c.call.verb == "watch" && c.call.namespace == "dev")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let open = loop {
        if let Some(c) = watching() {
            break c;
        }
        assert!(Instant::now() < deadline, "no record of the open watch");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(open.call.reason, ztk::audit::model::IN_PROGRESS, "{open:?}");
    let pid = env.gateway_pid().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
    env.restart_gateway();
    let kept = watching().expect("the watch's record survived the kill");
    assert_eq!(kept.call.id, open.call.id);
    // Finished calls replaced their intent record (same id): none is left in progress.
    let calls = store.list_calls(&Filter::default()).unwrap();
    let in_progress = calls
        .iter()
        .filter(|c| c.call.reason == ztk::audit::model::IN_PROGRESS)
        .count();
    assert_eq!(in_progress, 1, "{calls:#?}");
    let verify = env.gateway_cmd(&["audit", "verify"]).success();
    assert!(
        verify.to_lowercase().contains("ok") || verify.contains("intact"),
        "{verify}"
    );
}
