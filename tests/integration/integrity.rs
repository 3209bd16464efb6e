//! Audit integrity with real processes: the chain catches what the sqlite3 CLI changes behind
//! ztk's back, and the gateway's audit_mode decides what happens while its store cannot be
//! written (the fault: another process — the sqlite3 CLI — holds the store's write lock longer
//! than the writer's busy timeout, as a stuck backup or a hand edit would).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::harness::*;

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A copy of a store (consistent, WAL included) to tamper with.
fn copy_of(env: &Env, db: &Path, name: &str) -> std::path::PathBuf {
    let copy = env.path(name);
    sqlite(db, &format!("VACUUM INTO '{}'", copy.display()));
    copy
}

#[test]
fn verify_catches_rows_edited_deleted_and_inserted_with_the_sqlite3_cli() {
    let mut env = Env::start_with("audit_checkpoint_interval = \"1s\"");
    env.add_user("root", &["ztk-admins"]);
    env.login();
    env.kubectl(&["get", "pods", "-A"]).success();
    env.kubectl(&["create", "configmap", "chain-test", "--from-literal=a=b"])
        .success();
    env.kubectl(&["get", "configmap", "chain-test", "-o", "yaml"])
        .success();

    // The untouched store verifies: how many records, and the head.
    let out = env.ztk(&["audit", "verify"]).success();
    let db = env.path("client/data/audit.db");
    let records: u64 = sqlite(
        &db,
        "SELECT (SELECT COUNT(*) FROM api_calls) + (SELECT COUNT(*) FROM commands)",
    )
    .parse()
    .unwrap();
    let head = sqlite(
        &db,
        "SELECT seq || ' sha256:' || lower(hex(entry_hash)) FROM chain ORDER BY seq DESC LIMIT 1",
    );
    assert!(records > 5, "{out}");
    assert!(out.starts_with("OK:"), "{out}");
    assert!(out.contains(&format!(": {records} records (")), "{out}");
    assert!(out.contains(&format!("head seq {head}")), "{out}");

    // Edited: a call's verb.
    let edited = copy_of(&env, &db, "edited.db");
    let id = sqlite(
        &edited,
        "SELECT id FROM api_calls ORDER BY seq LIMIT 1 OFFSET 2",
    );
    sqlite(
        &edited,
        &format!("UPDATE api_calls SET verb = 'delete', name = name || '-x' WHERE id = '{id}'"),
    );
    let (code, out) = env
        .ztk(&["audit", "verify", "--db", edited.to_str().unwrap()])
        .failure();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("TAMPERED: {}: call {id} (seq ", edited.display())),
        "{out}"
    );
    assert!(out.contains("was changed after it was written"), "{out}");

    // Deleted: a command.
    let deleted = copy_of(&env, &db, "deleted.db");
    let id = sqlite(&deleted, "SELECT id FROM commands ORDER BY seq LIMIT 1");
    sqlite(&deleted, &format!("DELETE FROM commands WHERE id = '{id}'"));
    let (code, out) = env
        .ztk(&["audit", "verify", "--db", deleted.to_str().unwrap()])
        .failure();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("command {id} (seq ")), "{out}");
    assert!(out.contains("was deleted outside ztk"), "{out}");

    // Inserted: a copy of a call under a new id, with and without a sequence number.
    let inserted = copy_of(&env, &db, "inserted.db");
    let forged = "01990000-0000-7000-8000-00000000f0f0";
    sqlite(
        &inserted,
        &format!(
            "CREATE TEMP TABLE t AS SELECT * FROM api_calls ORDER BY seq LIMIT 1; \
             UPDATE t SET id = '{forged}', seq = NULL; INSERT INTO api_calls SELECT * FROM t;"
        ),
    );
    let (code, out) = env
        .ztk(&["audit", "verify", "--db", inserted.to_str().unwrap()])
        .failure();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "call {forged} has no sequence number: it was inserted outside ztk"
        )),
        "{out}"
    );
    let inserted = copy_of(&env, &db, "inserted2.db");
    sqlite(
        &inserted,
        &format!(
            "CREATE TEMP TABLE t AS SELECT * FROM api_calls ORDER BY seq LIMIT 1; \
             UPDATE t SET id = '{forged}', seq = (SELECT last + 1 FROM sequence); \
             INSERT INTO api_calls SELECT * FROM t;"
        ),
    );
    let (code, out) = env
        .ztk(&["audit", "verify", "--db", inserted.to_str().unwrap()])
        .failure();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "TAMPERED: {}: call {forged} (seq ",
            inserted.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("has no journal entry: it was inserted outside ztk"),
        "{out}"
    );

    // The gateway's store: intact, with signed checkpoints, verified on the gateway host and
    // remotely by an administrator only.
    let gw_db = env.path("gw/audit.db");
    let deadline = Instant::now() + Duration::from_secs(15);
    while sqlite(&gw_db, "SELECT COUNT(*) FROM chain_checkpoints") == "0" {
        assert!(Instant::now() < deadline, "no checkpoint was signed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = env.gateway_cmd(&["audit", "verify"]).success();
    assert!(out.starts_with("OK:"), "{out}");
    assert!(out.contains("valid; last valid: seq"), "{out}");
    let key_line = out
        .lines()
        .find(|l| l.starts_with("checkpoint key: "))
        .unwrap();
    let key = key_line["checkpoint key: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(key.len(), 64, "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.path("gw/audit-signing-key.p8"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, out) = env.ztk(&["audit", "verify", "--remote"]).failure();
    assert_eq!(code, 1);
    assert!(
        out.contains("may not verify the gateway's audit log"),
        "{out}"
    );
    env.login_as("root");
    let out = env.ztk(&["audit", "verify", "--remote"]).success();
    assert!(out.starts_with("OK: gateway https://"), "{out}");
    assert!(
        out.contains(&format!("gateway checkpoint key: {key}")),
        "{out}"
    );
    assert!(
        out.contains("gateway audit writer (best-effort): writing;"),
        "{out}"
    );
    // A hand edit of the gateway's store is reported by the gateway itself.
    let id = sqlite(&gw_db, "SELECT id FROM api_calls ORDER BY seq LIMIT 1");
    sqlite(
        &gw_db,
        &format!("UPDATE api_calls SET status = 200, user = 'mallory' WHERE id = '{id}'"),
    );
    let (code, out) = env.ztk(&["audit", "verify", "--remote"]).failure();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("call {id} (seq ")), "{out}");
    let (code, out) = env.gateway_cmd(&["audit", "verify"]).failure();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("TAMPERED: {}: call {id}", gw_db.display())),
        "{out}"
    );
    env.stop_gateway();
}

/// A gateway process whose output (stdout and stderr) the test reads.
struct Gateway {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Gateway {
    fn start(env: &mut Env) -> Gateway {
        let mut child = env
            .ztk(&["gateway", "serve", "--config", env.config.to_str().unwrap()])
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut gw = Gateway {
            child,
            lines,
            seen: Vec::new(),
        };
        let line = gw.wait_for("ztk gateway: listening on ");
        env.url = line["ztk gateway: listening on ".len()..].to_string();
        gw
    }

    /// Waits for an output line containing `text`; returns it.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the gateway never printed {text:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM; the output until it exits.
    fn stop(mut self) -> String {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sqlite3 CLI holding the store's write lock until released.
struct WriteLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl WriteLock {
    fn take(db: &Path) -> WriteLock {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sqlite3 CLI");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"BEGIN IMMEDIATE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        WriteLock {
            child,
            stdin: Some(stdin),
        }
    }

    fn release(mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"ROLLBACK;\n.quit\n").unwrap();
        drop(stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_statuses(env: &Env) -> Vec<(u16, String)> {
    env.gateway_store()
        .list_calls(&ztk::audit::Filter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.call.status, r.call.reason))
        .collect()
}

#[test]
fn fail_closed_gateway_refuses_while_its_store_is_locked_and_writes_everything_after() {
    let mut env = Env::prepare(
        tempfile::tempdir().unwrap(),
        "audit_mode = \"fail-closed\"",
        "",
    );
    let mut gw = Gateway::start(&mut env);
    gw.wait_for("audit_mode fail-closed");
    env.login();
    env.kubectl(&["get", "pods"]).success();
    let before = gateway_statuses(&env).len();

    let lock = WriteLock::take(&env.path("gw/audit.db"));
    // This call is served (the store has not failed yet); its record is held when it does.
    env.kubectl(&["get", "pods"]).success();
    gw.wait_for("holding them and retrying");
    let out = env.kubectl(&["get", "pods"]).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kubectl succeeded while the audit store was locked"
    );
    assert!(
        stderr.contains("cannot write its audit log, and its audit_mode is \"fail-closed\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("ServiceUnavailable") || stderr.contains("unable to handle"),
        "{stderr}"
    );

    lock.release();
    gw.wait_for("takes writes again");
    env.kubectl(&["get", "pods"]).success();
    // Every record made meanwhile is stored: the served call and the refused (503) ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        let statuses = gateway_statuses(&env);
        let refused = statuses.iter().filter(|(s, _)| *s == 503).count();
        if refused > 0 && statuses.len() >= before + 3 || Instant::now() > deadline {
            break statuses;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!refused.is_empty(), "{statuses:?}");
    assert!(
        refused
            .iter()
            .all(|(_, r)| r.contains("cannot write its audit log")),
        "{refused:?}"
    );
    assert!(statuses.len() >= before + 3, "{statuses:?}");
    let summary = gw.stop();
    let line = summary
        .lines()
        .find(|l| l.starts_with("ztk gateway: audit writer: "))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        line.contains("writing;") && line.contains(" 0 lost"),
        "{line}"
    );
    assert!(!line.contains(" 0 delayed by write failures"), "{line}");
    assert!(env.gateway_store().verify(&[]).unwrap().ok());
}

#[test]
fn best_effort_gateway_serves_while_its_store_is_locked_and_reports_the_failures() {
    let mut env = Env::prepare(tempfile::tempdir().unwrap(), "", "");
    env.add_user("root", &["ztk-admins"]);
    env.role(&["bind", "edit", "--user", "root"]);
    let mut gw = Gateway::start(&mut env);
    env.login_as("root");
    env.kubectl(&["get", "pods"]).success();

    let lock = WriteLock::take(&env.path("gw/audit.db"));
    env.kubectl(&["get", "pods"]).success();
    gw.wait_for("holding them and retrying");
    // Still served while the store fails; the failure is reported with its counts.
    env.kubectl(&["get", "pods"]).success();
    let out = env.ztk(&["audit", "verify", "--remote"]).success();
    let writer = out
        .lines()
        .find(|l| l.starts_with("gateway audit writer (best-effort): "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(writer.contains("NOT WRITING;"), "{writer}");
    assert!(writer.contains("(last error: "), "{writer}");
    assert!(!writer.contains(" 0 delayed by write failures"), "{writer}");

    lock.release();
    gw.wait_for("takes writes again");
    let out = env.ztk(&["audit", "verify", "--remote"]).success();
    assert!(
        out.contains("gateway audit writer (best-effort): writing;"),
        "{out}"
    );
    assert!(out.contains(" 0 held for retry"), "{out}");
    let summary = gw.stop();
    let line = summary
        .lines()
        .find(|l| l.starts_with("ztk gateway: audit writer: "))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        line.contains(" 0 lost") && !line.contains(" 0 delayed"),
        "{line}"
    );
    // Every call is in the gateway's store, and the chain holds.
    let calls = gateway_statuses(&env);
    assert!(calls.iter().all(|(s, _)| *s != 503), "{calls:?}");
    assert!(env.gateway_store().verify(&[]).unwrap().ok());
}
