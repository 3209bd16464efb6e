//! One suite of the audit store's rules, run against both backends: SQLite (a temp file) and
//! PostgreSQL (a database of its own on the test server, `db::testing`). Each rule is a
//! function over an opened store; `both!` makes a test per backend of it.

use std::time::Duration;

use uuid::Uuid;

use super::chain::SigningKey;
use super::filter::Filter;
use super::model::{now_us, AccessMethod, ApiCall, Command, Cursor};
use super::store::{AuditStore, Record};
use crate::args;

/// A store of `backend`, and what keeps it alive (the temp dir).
pub(crate) struct Opened {
    pub store: AuditStore,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL URL, for a second store on the same database (another gateway).
    pub url: Option<String>,
}

impl Opened {
    /// The gateway's users, sessions and bindings beside the store (a second call: another
    /// gateway's handle on them).
    pub fn users(&self) -> crate::gateway::users::UserStore {
        match &self.url {
            Some(url) => crate::gateway::users::UserStore::open_postgres(
                crate::db::PgUrl::parse(url, None).unwrap(),
            )
            .unwrap(),
            None => {
                crate::gateway::users::UserStore::open(&self.dir.path().join("gateway.db")).unwrap()
            }
        }
    }

    /// Another handle on the same store, as a second gateway (or process) opens it.
    pub fn reopen(&self) -> Result<AuditStore, super::store::StoreError> {
        match &self.url {
            Some(url) => AuditStore::open_postgres(
                crate::db::PgUrl::parse(url, None).unwrap(),
                &self.dir.path().join("audit"),
            ),
            None => AuditStore::open(&self.dir.path().join("audit.db")),
        }
    }
}

pub(crate) fn sqlite() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
    Opened {
        store,
        dir,
        url: None,
    }
}

pub(crate) fn postgres() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::db::testing::database();
    let store = AuditStore::open_postgres(
        crate::db::PgUrl::parse(&url, None).unwrap(),
        &dir.path().join("audit"),
    )
    .unwrap();
    Opened {
        store,
        dir,
        url: Some(url),
    }
}

macro_rules! both {
    ($($rule:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $rule() { super::$rule(super::sqlite()) })*
        }
        mod on_postgres {
            $(#[test] fn $rule() { super::$rule(super::postgres()) })*
        }
    };
}

both!(
    records_are_listed_filtered_and_counted,
    keyset_pages_are_stable_while_records_arrive,
    a_rewritten_call_is_stored_once_and_the_chain_verifies,
    followers_of_the_sequence_see_every_record_once,
    an_edit_behind_the_stores_back_is_reported,
    checkpoints_are_signed_and_checked,
    two_writers_on_one_store_share_one_sequence_and_one_chain,
    a_newer_schema_is_refused,
    sessions_and_their_revocation_reach_every_gateway,
    the_session_limit_holds_across_gateways,
    a_batch_sent_to_two_gateways_at_once_is_stored_once,
    one_gateway_at_a_time_delivers_a_sink,
    rollups_count_every_call_once,
    two_gateways_reconciling_at_once_recover_each_call_once,
    a_sign_in_begun_on_one_gateway_finishes_on_another,
    stored_roles_reach_every_gateway,
    failed_logins_count_across_gateways,
    a_commands_records_out_of_order_only_move_it_forward,
);

fn call(user: &str, ns: &str, verb: &str, status: u16, command: Option<Uuid>) -> ApiCall {
    ApiCall {
        id: Uuid::now_v7(),
        time_us: now_us(),
        user: user.into(),
        cluster: "dev".into(),
        namespace: ns.into(),
        resource: "pods".into(),
        verb: verb.into(),
        method: "GET".into(),
        path: format!("/api/v1/namespaces/{ns}/pods"),
        status,
        duration_us: 1500,
        command_id: command,
        request_id: Some(Uuid::now_v7()),
        access_method: AccessMethod::Cli,
        decision: "allow".into(),
        user_agent: "kubectl/v1.33 — ünïcode".into(),
        ..Default::default()
    }
}

fn command(user: &str, line: &str) -> Command {
    Command {
        id: Uuid::now_v7(),
        started_us: now_us(),
        user: user.into(),
        cluster: "dev".into(),
        argv: line.split(' ').map(String::from).collect(),
        command_line: line.into(),
        ..Default::default()
    }
}

fn write(store: &AuditStore, commands: &[Command], calls: &[ApiCall]) {
    let (sink, writer) = store.start_writer(64).unwrap();
    for c in commands {
        sink.record_command(c.clone());
    }
    for c in calls {
        sink.record_call(c.clone());
    }
    assert!(sink.flush(Duration::from_secs(10)));
    drop(sink);
    let stats = writer.close();
    assert_eq!(
        stats.status().failed + stats.status().spilled,
        0,
        "{:?}",
        stats.status()
    );
}

fn records_are_listed_filtered_and_counted(o: Opened) {
    let store = &o.store;
    let mut get = command("alice", "kubectl get pods -n web");
    let del = command("bob", "kubectl delete pod x -n prod");
    let calls = vec![
        call("alice", "web", "list", 200, Some(get.id)),
        call("alice", "web", "get", 404, Some(get.id)),
        call("bob", "prod", "delete", 200, Some(del.id)),
        call("bob", "prod", "get", 403, None),
    ];
    write(store, &[get.clone(), del.clone()], &calls);
    get.ended_us = Some(now_us());
    get.exit_code = Some(1);
    get.api_calls = 2;
    write(store, std::slice::from_ref(&get), &[]);

    let all = store.list_calls(&Filter::default()).unwrap();
    assert_eq!(all.len(), 4);
    // Newest first, every field back as written.
    assert_eq!(all[0].call, calls[3]);
    assert_eq!(all[3].call, calls[0]);
    assert_eq!(
        all[3].command_line.as_deref(),
        Some("kubectl get pods -n web")
    );
    let f = Filter::parse_query("user:bob status:4xx").unwrap();
    let rows = store.list_calls(&f).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].call.id, calls[3].id);
    assert_eq!(store.count_calls(&f).unwrap(), 1);
    let f = Filter::parse_query("ns:web,prod verb:get").unwrap();
    assert_eq!(store.count_calls(&f).unwrap(), 2);
    // Command text, on calls and on commands.
    let f = Filter::parse_query("delete").unwrap();
    assert_eq!(store.count_calls(&f).unwrap(), 1);
    assert_eq!(store.count_commands(&f).unwrap(), 1);

    let commands = store.list_commands(&Filter::default()).unwrap();
    assert_eq!(commands.len(), 2);
    let row = commands.iter().find(|r| r.command.id == get.id).unwrap();
    assert_eq!(row.command, get);
    assert_eq!(row.calls, 2);
    assert_eq!(row.statuses.get("2xx"), Some(&1));
    assert_eq!(row.statuses.get("4xx"), Some(&1));
    // Call-level filters select commands with a matching call.
    let f = Filter::parse_query("status:404").unwrap();
    let rows = store.list_commands(&f).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].command.id, get.id);

    assert_eq!(store.command(get.id).unwrap(), Some(get.clone()));
    assert_eq!(store.command(Uuid::now_v7()).unwrap(), None);
    let tail = &get.id.to_string()[24..];
    assert_eq!(store.find_command(tail).unwrap(), vec![get.clone()]);

    let recent = store.recent_values(100, None).unwrap();
    assert_eq!(recent.users, ["alice", "bob"]);
    assert_eq!(recent.namespaces, ["prod", "web"]);
    assert_eq!(recent.verbs, ["delete", "get", "list"]);
    // One user's own: nothing of the others'.
    let bobs = store.recent_values(100, Some("bob")).unwrap();
    assert_eq!(bobs.users, ["bob"]);
    assert_eq!(bobs.namespaces, ["prod"]);
    assert_eq!(bobs.verbs, ["delete", "get"]);
    let one = store.recent_values(1, Some("alice")).unwrap();
    assert_eq!(one.verbs.len(), 1);
    let owners = store.command_owners_since(0, 10).unwrap();
    assert!(owners.iter().any(|(id, u, _)| *id == del.id && u == "bob"));
}

fn keyset_pages_are_stable_while_records_arrive(o: Opened) {
    let store = &o.store;
    // Calls sharing timestamps: the id breaks ties.
    let base = now_us();
    let calls: Vec<ApiCall> = (0..25)
        .map(|i| ApiCall {
            time_us: base + (i / 3) as i64,
            ..call("alice", "web", "list", 200, None)
        })
        .collect();
    write(store, &[], &calls);
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = store
            .query_calls(&Filter::default(), after.as_ref(), 7)
            .unwrap();
        seen.extend(page.items.iter().map(|r| r.call.id));
        // A newer call arriving between pages does not shift the pages after it.
        write(store, &[], &[call("carol", "web", "get", 200, None)]);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<_> = calls.iter().map(|c| (c.time_us, c.id)).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected.iter().map(|(_, id)| *id).collect::<Vec<_>>());
}

fn a_rewritten_call_is_stored_once_and_the_chain_verifies(o: Opened) {
    let store = &o.store;
    let mut open = call("alice", "web", "watch", 200, None);
    open.reason = "stream open".into();
    write(store, &[], std::slice::from_ref(&open));
    let mut done = open.clone();
    done.reason.clear();
    done.duration_us = 9_000_000;
    done.bytes_out = 12345;
    write(store, &[], std::slice::from_ref(&done));
    let rows = store.list_calls(&Filter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].call, done);
    let report = store.verify(&[]).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.calls, report.entries), (1, 2));
    assert_eq!(store.last_seq().unwrap(), 2);
}

fn followers_of_the_sequence_see_every_record_once(o: Opened) {
    let store = &o.store;
    let cmd = command("alice", "kubectl get pods");
    let calls: Vec<_> = (0..10)
        .map(|i| {
            call(
                if i % 2 == 0 { "alice" } else { "bob" },
                "web",
                "list",
                200,
                Some(cmd.id),
            )
        })
        .collect();
    write(store, std::slice::from_ref(&cmd), &calls);
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let batch = store.records_after(after, &Filter::default(), 4).unwrap();
        for r in &batch.records {
            assert!(r.seq > after);
            seen.push(r.seq);
        }
        if batch.through == after {
            break;
        }
        after = batch.through;
    }
    assert_eq!(seen, (1..=11).collect::<Vec<_>>());
    // A filter: bob's records only, and the follower still reaches the end.
    let f = Filter::parse_query("user:bob").unwrap();
    let batch = store.records_after(0, &f, 100).unwrap();
    assert_eq!(batch.records.len(), 5);
    assert_eq!(batch.through, 11);
    assert!(batch
        .records
        .iter()
        .all(|r| matches!(&r.record, Record::Call(c) if c.call.user == "bob")));
    let first = store.records_after(0, &Filter::default(), 1).unwrap();
    match &first.records[0].record {
        Record::Command(c) => assert_eq!(c.command.id, cmd.id),
        other => panic!("the command was written first: {other:?}"),
    }
}

fn an_edit_behind_the_stores_back_is_reported(o: Opened) {
    let store = &o.store;
    let calls: Vec<_> = (0..3)
        .map(|_| call("alice", "web", "list", 200, None))
        .collect();
    write(store, &[], &calls);
    assert!(store.verify(&[]).unwrap().ok());
    store
        .with_db(false, |db| {
            db.execute(
                "UPDATE api_calls SET verb = 'delete' WHERE id = ?",
                args![calls[1].id.to_string()],
            )
        })
        .unwrap();
    let report = store.verify(&[]).unwrap();
    assert_eq!(report.problem_count, 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].id, calls[1].id.to_string());
    assert!(report.problems[0].message.contains("was changed"));
    // A deleted row.
    store
        .with_db(false, |db| {
            db.execute(
                "DELETE FROM api_calls WHERE id = ?",
                args![calls[2].id.to_string()],
            )
        })
        .unwrap();
    let report = store.verify(&[]).unwrap();
    assert_eq!(report.problem_count, 2, "{:?}", report.problems);
    assert!(report.problems[1].message.contains("deleted"));
}

fn checkpoints_are_signed_and_checked(o: Opened) {
    let store = &o.store;
    let key = SigningKey::load_or_create(&o.dir.path().join("key")).unwrap();
    let other = SigningKey::load_or_create(&o.dir.path().join("other")).unwrap();
    assert_eq!(store.checkpoint(&key).unwrap(), None, "nothing to sign yet");
    write(store, &[], &[call("alice", "web", "list", 200, None)]);
    let cp = store
        .checkpoint(&key)
        .unwrap()
        .expect("a new head is signed");
    assert_eq!(cp.seq, 1);
    assert_eq!(
        store.checkpoint(&key).unwrap(),
        None,
        "the head did not move"
    );
    let report = store.verify(&[key.public_key()]).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.valid_checkpoints, 1);
    let report = store.verify(&[other.public_key()]).unwrap();
    assert!(!report.ok());
    assert!(report.problems[0].message.contains("not by the pinned key"));
}

fn two_writers_on_one_store_share_one_sequence_and_one_chain(o: Opened) {
    // Two gateways (handles with writers of their own) writing at once.
    let a = o.store.clone();
    let b = o.reopen().unwrap();
    let per = 300;
    let run = |store: AuditStore, user: &'static str| {
        std::thread::spawn(move || {
            let (sink, writer) = store.start_writer(64).unwrap();
            for i in 0..per {
                sink.record_call(call(user, "web", "list", 200, None));
                if i % 50 == 0 {
                    sink.flush(Duration::from_secs(10));
                }
            }
            assert!(sink.flush(Duration::from_secs(30)));
            drop(sink);
            // Taking turns on the sequence, not failing and retrying.
            let stats = writer.close().status();
            assert_eq!(stats.write_errors, 0, "{stats:?}");
        })
    };
    let ta = run(a.clone(), "alice");
    let tb = run(b.clone(), "bob");
    // A follower meanwhile: what it has seen is never followed by a smaller number.
    let mut after = 0;
    let mut seen = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < 2 * per && std::time::Instant::now() < deadline {
        let batch = b.records_after(after, &Filter::default(), 100).unwrap();
        for r in &batch.records {
            assert_eq!(
                r.seq,
                after + 1,
                "the follower skipped or repeated a record"
            );
            after = r.seq;
            seen += 1;
        }
        after = after.max(batch.through);
    }
    ta.join().unwrap();
    tb.join().unwrap();
    assert_eq!(seen, 2 * per);
    assert_eq!(a.last_seq().unwrap(), (2 * per) as i64);
    assert_eq!(a.count_calls(&Filter::default()).unwrap(), (2 * per) as u64);
    let report = b.verify(&[]).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, (2 * per) as u64);
}

fn a_newer_schema_is_refused(o: Opened) {
    let store = &o.store;
    match &o.url {
        Some(_) => {
            store
                .with_db(false, |db| {
                    db.execute(
                        "UPDATE ztk_schema SET version = version + 1 WHERE component = 'audit'",
                        &[],
                    )
                })
                .unwrap();
        }
        None => {
            store
                .with_db(false, |db| db.batch("PRAGMA user_version = 1000"))
                .unwrap();
        }
    }
    let err = o.reopen().unwrap_err().to_string();
    assert!(err.contains("newer ztk"), "{err}");
}

fn sessions_and_their_revocation_reach_every_gateway(o: Opened) {
    use crate::gateway::rbac::{Binding, Subject};
    use crate::gateway::users::TokenRejection;
    let a = o.users();
    let b = o.users();
    a.add_user("alice", &["dev".into()], "pw").unwrap();
    let (token, _) = a.create_session("alice", 60_000_000, 0).unwrap();
    // Cached on B after the first lookup.
    for _ in 0..3 {
        assert_eq!(b.authenticate(&token).unwrap().unwrap().user, "alice");
    }
    let before = b.data_version().unwrap();
    a.revoke_user("alice").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match b.authenticate(&token).unwrap() {
            Err(TokenRejection::Revoked) => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => panic!("B still accepts a session A revoked a second ago: {other:?}"),
        }
    }
    // A binding made through A: B's version moves, and B reads it.
    let binding = Binding {
        role: "view".into(),
        subject: Subject::Group("dev".into()),
        cluster: None,
        namespace: Some("web".into()),
    };
    assert!(a.add_binding(&binding).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while b.data_version().unwrap() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(b.data_version().unwrap(), before);
    assert_eq!(b.list_bindings().unwrap(), vec![binding]);
}

fn the_session_limit_holds_across_gateways(o: Opened) {
    let gateways = [o.users(), o.users()];
    gateways[0].add_user("alice", &[], "pw").unwrap();
    let made = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..8 {
            let g = &gateways[i % 2];
            let made = &made;
            s.spawn(move || {
                if g.create_session("alice", 60_000_000, 3).is_ok() {
                    made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(made.into_inner(), 3);
    assert_eq!(gateways[1].open_sessions("alice").unwrap(), 3);
}

fn a_batch_sent_to_two_gateways_at_once_is_stored_once(o: Opened) {
    use super::ingest::Ingestor;
    let a = Ingestor::new(o.store.clone());
    let b = Ingestor::new(o.reopen().unwrap());
    let mut cmd = command("alice", "kubectl get pods");
    cmd.ended_us = Some(now_us());
    cmd.exit_code = Some(0);
    // Enough calls for PostgreSQL's COPY path; a tenth are streams still open.
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut c = call("alice", "web", "list", 200, Some(cmd.id));
            if i % 10 == 0 {
                c.status = 101;
                c.reason = super::model::STREAM_OPEN.into();
            }
            c
        })
        .collect();
    for _ in 0..5 {
        std::thread::scope(|s| {
            for ingestor in [&a, &b] {
                let (cmd, calls) = (&cmd, &calls);
                s.spawn(move || {
                    ingestor
                        .ingest("alice", std::slice::from_ref(cmd), calls)
                        .unwrap()
                });
            }
        });
    }
    // Another user cannot take the ids over.
    let err = b
        .ingest("mallory", std::slice::from_ref(&cmd), &[])
        .unwrap_err();
    assert!(err.to_string().contains("another user"), "{err}");
    let err = b.ingest("mallory", &[], &calls).unwrap_err();
    assert!(err.to_string().contains("another user"), "{err}");
    assert_eq!(o.store.count_commands(&Filter::default()).unwrap(), 1);
    // The command was written (and took a number) once.
    assert_eq!(o.store.last_seq().unwrap(), 1);
    let n: i64 = o
        .store
        .with_db(true, |db| {
            db.query_row("SELECT COUNT(*) FROM client_calls", &[], |r| r.get(0))
                .map(|n| n.unwrap_or(0))
        })
        .unwrap();
    assert_eq!(n, 100);
    assert!(o.store.verify(&[]).unwrap().ok());
    // The open streams' final records replace them (and only them); sent again, nothing.
    let closed: Vec<ApiCall> = calls
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.reason == super::model::STREAM_OPEN {
                c.reason.clear();
                c.status = 200;
                c.bytes_out = 7;
            }
            c
        })
        .collect();
    assert_eq!(a.ingest("alice", &[], &closed).unwrap().calls, 10);
    assert_eq!(b.ingest("alice", &[], &closed).unwrap().calls, 0);
    let open: i64 = o
        .store
        .with_db(true, |db| {
            db.query_row(
                "SELECT COUNT(*) FROM client_calls WHERE reason = ?",
                args![super::model::STREAM_OPEN],
                |r| r.get(0),
            )
            .map(|n| n.unwrap_or(0))
        })
        .unwrap();
    assert_eq!(open, 0);
    // A batch of commands some of which are unchanged (re-sent): the others are written, the
    // chain and the sequence still agree (none ends with a number no record took).
    let fresh = command("alice", "kubectl get ns");
    let mut later = fresh.clone();
    later.ended_us = Some(now_us());
    let done = a
        .ingest("alice", &[fresh.clone(), cmd.clone()], &[])
        .unwrap();
    assert_eq!(done.commands, 1);
    let done = a.ingest("alice", &[later, cmd.clone()], &[]).unwrap();
    assert_eq!(done.commands, 1);
    let report = o.store.verify(&[]).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(o.store.count_commands(&Filter::default()).unwrap(), 2);
}

fn one_gateway_at_a_time_delivers_a_sink(o: Opened) {
    use crate::sinks::cursor::Cursors;
    let a = Cursors::new(&o.store);
    let b = Cursors::new(&o.reopen().unwrap());
    let t = 1_000_000;
    assert!(a.lease("siem", "gw-a", t, t + 10).unwrap());
    assert!(!b.lease("siem", "gw-b", t + 1, t + 11).unwrap());
    assert!(a.lease("siem", "gw-a", t + 5, t + 15).unwrap(), "renewed");
    // A's lease runs out (it died): B takes over from the durable cursor.
    a.advance("siem", 42, 3, t + 6).unwrap();
    assert!(!b.lease("siem", "gw-b", t + 14, t + 24).unwrap());
    assert!(b.lease("siem", "gw-b", t + 15, t + 25).unwrap());
    assert_eq!(b.load("siem").unwrap(), 42);
    assert!(!a.lease("siem", "gw-a", t + 16, t + 26).unwrap());
    // A stale advance never moves the cursor back.
    a.advance("siem", 40, 0, t + 17).unwrap();
    assert_eq!(b.load("siem").unwrap(), 42);
    // B stops and gives it up: A takes it at once.
    b.release("siem", "gw-b").unwrap();
    assert!(a.lease("siem", "gw-a", t + 18, t + 28).unwrap());
    let rows = a.all().unwrap();
    assert_eq!(rows[0].lease_owner.as_deref(), Some("gw-a"));
    assert_eq!(rows[0].delivered, 3);
}

fn rollups_count_every_call_once(o: Opened) {
    use super::stats::{By, StatsQuery};
    let store = &o.store;
    let mut calls = Vec::new();
    for i in 0..40 {
        let mut c = call(
            if i % 4 == 0 { "bob" } else { "alice" },
            "web",
            "list",
            if i % 5 == 0 { 500 } else { 200 },
            None,
        );
        c.time_us -= 3 * 60_000_000 + i * 1_000_000;
        c.duration_us = 1000 * (i + 1);
        calls.push(c);
    }
    write(store, &[], &calls);
    let q = StatsQuery {
        filter: Filter {
            since_us: Some(now_us() - 3_600_000_000),
            ..Default::default()
        },
        by: By::User,
        interval_us: 60_000_000,
        slowest: 3,
    };
    let before = store.stats(&q).unwrap();
    assert!(store.roll_up().unwrap() > 0);
    assert_eq!(store.roll_up().unwrap(), 0, "rolled up once");
    // Another gateway rolling up finds nothing left.
    assert_eq!(o.reopen().unwrap().roll_up().unwrap(), 0);
    let after = store.stats(&q).unwrap();
    for s in [&before, &after] {
        assert_eq!(s.total.calls, 40);
        assert_eq!(s.total.statuses.get("5xx"), Some(&8));
        let bob = s.groups.iter().find(|g| g.key == "bob").unwrap();
        assert_eq!(bob.calls, 10);
        assert_eq!(s.slowest.len(), 3);
        assert_eq!(s.slowest[0].call.duration_us, 40_000);
    }
    assert_eq!(before.total.p50_us, after.total.p50_us);

    // Over hours: whole hours that ended two hours ago come from the hourly tier per grouping
    // field (made by the roll-up; clients' calls of such hours ingested later are written to
    // it by ingest); the same answer as every call.
    const HOUR: i64 = 3_600_000_000;
    let older: Vec<ApiCall> = (0..30)
        .map(|i| {
            let mut c = call(
                ["alice", "bob"][i as usize % 2],
                "web",
                "get",
                if i % 3 == 0 { 404 } else { 200 },
                None,
            );
            c.time_us = now_us() - 4 * HOUR - i * 60_000_000;
            c.duration_us = 500 * (i + 1);
            c
        })
        .collect();
    write(store, &[], &older);
    assert!(store.roll_up().unwrap() > 0);
    let shipped: Vec<ApiCall> = (0..10)
        .map(|i| {
            let mut c = call("alice", "web", "get", 200, None);
            c.time_us = now_us() - 4 * HOUR - i * 60_000_000;
            c.duration_us = 2_000 + i;
            c.request_id = Some(c.id);
            c
        })
        .collect();
    super::ingest::Ingestor::new(store.clone())
        .ingest("alice", &[], &shipped)
        .unwrap();
    let hours = StatsQuery {
        filter: Filter {
            since_us: Some(now_us() - 6 * HOUR),
            ..Default::default()
        },
        by: By::User,
        interval_us: HOUR,
        slowest: 3,
    };
    let fast = store.stats(&hours).unwrap();
    let mut every = hours.clone();
    every.filter.min_duration_us = Some(0);
    let every = store.stats(&every).unwrap();
    assert_eq!(fast.total.calls, 70);
    assert_eq!(fast.total.client_calls, 10);
    assert_eq!(fast.total_series, every.total_series);
    assert_eq!(fast.series, every.series);
    let groups = |s: &super::stats::Stats| -> Vec<(String, u64, Option<i64>, u64)> {
        s.groups
            .iter()
            .map(|g| (g.key.clone(), g.calls, g.p50_us, g.client_calls))
            .collect()
    };
    assert_eq!(groups(&fast), groups(&every));
    assert_eq!(fast.total.statuses, every.total.statuses);
    let in_tier: i64 = store
        .with_db(true, |db| {
            db.query_row("SELECT COUNT(*) FROM call_rollups_by", &[], |r| r.get(0))
        })
        .unwrap()
        .unwrap_or(0);
    assert!(in_tier > 0, "the tier holds the hours that ended");
}

fn two_gateways_reconciling_at_once_recover_each_call_once(o: Opened) {
    use super::ingest::Ingestor;
    use super::reconcile::{reconcile, recovered_id};
    // Clients' records of calls whose gateway records were lost.
    let old = now_us() - 60_000_000;
    let lost: Vec<ApiCall> = (0..30)
        .map(|_| {
            let mut c = call("alice", "web", "get", 200, None);
            c.time_us = old;
            c.request_id = Some(c.id);
            c
        })
        .collect();
    Ingestor::new(o.store.clone())
        .ingest("alice", &[], &lost)
        .unwrap();
    let stores = [o.store.clone(), o.reopen().unwrap()];
    let writers: Vec<_> = stores.iter().map(|s| s.start_writer(64).unwrap()).collect();
    std::thread::scope(|s| {
        for (store, (sink, _)) in stores.iter().zip(&writers) {
            // As each gateway's upkeep does first.
            super::reconcile::prepare(store).unwrap();
            s.spawn(move || reconcile(store, sink, now_us()).unwrap());
        }
    });
    for (sink, writer) in writers {
        drop(sink);
        writer.close();
    }
    let calls = o.store.list_calls(&Filter::default()).unwrap();
    assert_eq!(calls.len(), lost.len(), "each lost call recovered once");
    for c in &lost {
        let mine: Vec<_> = calls
            .iter()
            .filter(|g| g.call.request_id == Some(c.id))
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].call.id, recovered_id(c.id));
    }
    assert!(o.store.verify(&[]).unwrap().ok());
}

fn a_sign_in_begun_on_one_gateway_finishes_on_another(o: Opened) {
    use crate::gateway::users::PendingSignIn;
    let a = o.users();
    let b = o.users();
    let now = now_us();
    let p = PendingSignIn {
        nonce: "n".into(),
        verifier: "v".into(),
        redirect_uri: "https://gw/ztk/oidc/callback".into(),
        next: "/audit/kubectl".into(),
    };
    assert!(a
        .put_sign_in("state-1", &p, now, now + 600_000_000)
        .unwrap());
    assert!(a.put_sign_in("state-2", &p, now, now + 1).unwrap());
    // Taken once, by whichever gateway the callback reaches.
    assert_eq!(b.take_sign_in("state-1", now).unwrap(), Some(p.clone()));
    assert_eq!(a.take_sign_in("state-1", now).unwrap(), None);
    assert_eq!(b.take_sign_in("state-2", now + 2).unwrap(), None, "expired");
    assert_eq!(b.take_sign_in("unknown", now).unwrap(), None);
    // An ID token is taken once across gateways, until it expires.
    assert!(a.take_id_token("h1", now + 1_000, now).unwrap());
    assert!(!b.take_id_token("h1", now + 1_000, now).unwrap());
    assert!(
        b.take_id_token("h1", now + 5_000, now + 2_000).unwrap(),
        "expired, forgotten"
    );
}

fn stored_roles_reach_every_gateway(o: Opened) {
    use crate::gateway::rbac::{Role, Rule};
    let a = o.users();
    let b = o.users();
    let before = b.data_version().unwrap();
    let rule: Rule =
        toml::from_str("api_groups = [\"\"]\nresources = [\"configmaps\"]\nverbs = [\"get\"]")
            .unwrap();
    let role = Role {
        name: "cm-reader".into(),
        rules: vec![rule],
        builtin: false,
    };
    assert!(a.put_role(&role).unwrap());
    assert!(!a.put_role(&role).unwrap(), "unchanged");
    assert_eq!(b.list_roles().unwrap(), vec![role]);
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while b.data_version().unwrap() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(b.data_version().unwrap(), before, "B heard of the change");
    assert!(b.remove_role("cm-reader").unwrap());
    assert!(!a.remove_role("cm-reader").unwrap());
    assert!(a.list_roles().unwrap().is_empty());
}

fn failed_logins_count_across_gateways(o: Opened) {
    use crate::gateway::throttle::LoginThrottle;
    let a = LoginThrottle::new(std::sync::Arc::new(o.users()));
    let b = LoginThrottle::new(std::sync::Arc::new(o.users()));
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let t = 1_000_000_000;
    // Five failures, spread over two gateways: the user waits on both.
    for i in 0..5 {
        let g = if i % 2 == 0 { &a } else { &b };
        assert_eq!(g.wait("alice", ip, t).unwrap(), None);
        g.failed("alice", ip, t).unwrap();
    }
    assert!(a.wait("alice", ip, t).unwrap().is_some());
    assert!(b.wait("alice", ip, t).unwrap().is_some());
    b.succeeded("alice").unwrap();
    assert_eq!(a.wait("alice", ip, t).unwrap(), None);
}

fn a_commands_records_out_of_order_only_move_it_forward(o: Opened) {
    use super::ingest::Ingestor;
    let ingestor = Ingestor::new(o.store.clone());
    let start = command("alice", "kubectl get pods -w");
    let mut running = start.clone();
    running.api_calls = 3;
    let mut ended = running.clone();
    ended.api_calls = 5;
    ended.ended_us = Some(start.started_us + 2_000_000);
    ended.exit_code = Some(0);
    // The end first (its batch stored first), then the older records.
    for record in [&ended, &start, &running] {
        ingestor
            .ingest("alice", std::slice::from_ref(record), &[])
            .unwrap();
    }
    assert_eq!(o.store.command(start.id).unwrap(), Some(ended.clone()));
    // Only the end took a number: the older records changed nothing.
    assert_eq!(o.store.last_seq().unwrap(), 1);
    assert!(o.store.verify(&[]).unwrap().ok());
}
