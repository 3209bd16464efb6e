//! The audit trail as administrators use it: views, every filter and their combinations, the
//! same answers locally and from the gateway, and exports that survive hostile data.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The filter semantics, written independently of the SQL: values of one kind OR, kinds AND.
fn matches(row: &Value, args: &[&str], now_us: i64) -> bool {
    let mut kinds: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for pair in args.chunks(2) {
        kinds.entry(pair[0]).or_default().push(pair[1]);
    }
    let s = |k: &str| row[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| row[k].as_i64().unwrap_or(0);
    let ago = |d: &str| {
        let (num, unit) = d.split_at(d.len() - 1);
        let scale = match unit {
            "d" => 86_400_000_000i64,
            "h" => 3_600_000_000,
            _ => panic!("{d}"),
        };
        now_us - num.parse::<i64>().unwrap() * scale
    };
    kinds.iter().all(|(kind, values)| {
        values.iter().any(|v| match *kind {
            "--user" => s("user") == *v,
            "--cluster" => s("cluster") == *v,
            "--namespace" => s("namespace") == *v,
            "--verb" => s("verb") == *v,
            "--resource" => match v.split_once('/') {
                Some((r, sub)) => s("resource") == r && s("subresource") == sub,
                None => s("resource") == *v,
            },
            "--status" => match v.strip_suffix("xx") {
                Some(class) => n("status") / 100 == class.parse::<i64>().unwrap(),
                None => n("status") == v.parse::<i64>().unwrap(),
            },
            "--access-method" => s("access_method") == *v,
            "--command" => s("command_line").contains(v),
            "--min-duration" => {
                n("duration_us") >= v.trim_end_matches("ms").parse::<i64>().unwrap() * 1000
            }
            "--since" => n("time_us") >= ago(v),
            "--until" => n("time_us") < ago(v),
            other => panic!("unknown filter {other}"),
        })
    })
}

#[test]
fn every_filter_gives_the_same_answer_locally_and_from_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::prepare(dir, "", "");
    env.add_user("root", &["ztk-admins"]);
    // One seeded store, copied to the gateway: both sides hold exactly the same records.
    env.ztk(&["audit", "seed", "--count", "12000"]).success();
    let db = rusqlite::Connection::open(env.path("client/data/audit.db")).unwrap();
    std::fs::create_dir_all(env.path("gw")).unwrap();
    db.execute("VACUUM INTO ?", [env.path("gw/audit.db").to_str().unwrap()])
        .unwrap();
    drop(db);
    env.serve();
    env.login_as("root");

    let all_text = env
        .ztk(&[
            "audit", "list", "--view", "calls", "-o", "ndjson", "--limit", "1000000",
        ])
        .success();
    let all = ndjson(&all_text);
    assert_eq!(all.len(), 12000);
    let now = ztk::audit::model::now_us();

    let cases: &[&[&str]] = &[
        &[],
        &["--user", "alice"],
        &["--user", "alice", "--user", "bob"],
        &["--user", "alice", "--verb", "delete"],
        &["--status", "4xx"],
        &["--status", "404", "--status", "500"],
        &["--namespace", "payments", "--resource", "pods"],
        &[
            "--resource",
            "deployments",
            "--cluster",
            "prod",
            "--cluster",
            "dev",
        ],
        &["--since", "7d", "--until", "1d"],
        &["--min-duration", "20ms", "--verb", "list"],
        &["--command", "get pods", "--status", "2xx"],
        &["--access-method", "cli", "--namespace", "web"],
        &["--access-method", "api"],
    ];
    for args in cases {
        let expected: Vec<&Value> = all.iter().filter(|r| matches(r, args, now)).collect();
        let mut local_args = vec![
            "audit", "list", "--view", "calls", "-o", "ndjson", "--limit", "1000000",
        ];
        local_args.extend_from_slice(args);
        let local = ndjson(&env.ztk(&local_args).success());
        let mut remote_args = local_args.clone();
        remote_args.push("--remote");
        let remote = ndjson(&env.ztk(&remote_args).success());
        let ids = |rows: &[Value]| {
            rows.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let want: Vec<String> = expected
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids(&local), want, "local {args:?}");
        assert_eq!(ids(&remote), want, "remote {args:?}");
        assert_eq!(local, remote, "local and remote rows differ for {args:?}");
    }

    // The commands view filters commands by their calls, the same on both sides.
    for args in [
        &["--verb", "delete", "--user", "carol"][..],
        &["--status", "5xx"][..],
    ] {
        let mut local_args = vec!["audit", "list", "-o", "ndjson", "--limit", "1000000"];
        local_args.extend_from_slice(args);
        let local = ndjson(&env.ztk(&local_args).success());
        let mut remote_args = local_args.clone();
        remote_args.push("--remote");
        assert_eq!(local, ndjson(&env.ztk(&remote_args).success()), "{args:?}");
        let call_filter: Vec<&str> = args.to_vec();
        let want: BTreeSet<String> = all
            .iter()
            .filter(|r| matches(r, &call_filter, now))
            .map(|r| r["command_id"].as_str().unwrap().to_string())
            .collect();
        let got: BTreeSet<String> = local
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{args:?}");
    }

    // --limit caps a listing, on both sides.
    let five = ndjson(
        &env.ztk(&[
            "audit", "list", "--view", "calls", "-o", "ndjson", "--limit", "5", "--remote",
        ])
        .success(),
    );
    assert_eq!(five.len(), 5);
    assert_eq!(five[..], all[..5]);
}

fn id_tail(row: &Value) -> String {
    let id = row["id"].as_str().unwrap();
    id[id.len() - 8..].to_string()
}

#[test]
fn commands_view_and_show_link_commands_to_their_calls_with_both_durations() {
    let env = Env::start();
    env.add_user("root", &["ztk-admins"]);
    env.login();
    env.kubectl(&["get", "po", "-n", "dev"]).success();
    env.kubectl(&["get", "po", "nope", "-n", "dev"]).failure();

    let commands = ndjson(&env.ztk(&["audit", "list", "-o", "ndjson"]).success());
    assert_eq!(commands.len(), 2);
    let failed = &commands[0];
    assert_eq!(failed["command_line"], "kubectl get po nope -n dev");
    assert_eq!(failed["exit_code"], 1);
    assert!(failed["statuses"]["4xx"].as_i64().unwrap() >= 1, "{failed}");
    assert_eq!(
        failed["calls"].as_i64().unwrap(),
        failed["statuses"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>()
    );
    assert!(failed["duration_us"].as_i64().unwrap() > 0);

    let table = env.ztk(&["audit", "list", "-o", "table"]).success();
    assert!(
        table.contains("kubectl get po nope -n dev") && table.contains("4xx:1"),
        "{table}"
    );
    assert!(
        table.contains(&id_tail(&commands[0])) && table.contains(&id_tail(&commands[1])),
        "{table}"
    );

    let id = failed["id"].as_str().unwrap().to_string();
    let shown: Value = serde_json::from_str(
        &env.ztk(&["audit", "show", &id[id.len() - 8..], "-o", "json"])
            .success(),
    )
    .unwrap();
    assert_eq!(shown["command"]["id"], id.as_str());
    let calls = shown["calls"].as_array().unwrap();
    assert_eq!(calls.len() as i64, failed["calls"].as_i64().unwrap());
    assert!(calls
        .iter()
        .any(|c| c["status"] == 404 && c["name"] == "nope"));
    assert!(calls
        .iter()
        .all(|c| c["client_duration_us"].as_i64().is_some() && c["gateway_duration_us"].is_null()));
    let table = env
        .ztk(&["audit", "show", &id[id.len() - 8..], "-o", "table"])
        .success();
    assert!(
        table.contains("Exit code: 1") && table.contains("pods/nope"),
        "{table}"
    );

    // The gateway joins the shipped command and the client's timings to its own records.
    let remote: Value = serde_json::from_str(
        &env.ztk(&["audit", "show", &id, "--remote", "-o", "json"])
            .success(),
    )
    .unwrap();
    let remote_calls = remote["calls"].as_array().unwrap();
    assert_eq!(remote_calls.len(), calls.len());
    for c in remote_calls {
        let client = c["client_duration_us"]
            .as_i64()
            .expect("client duration at the gateway");
        let gateway = c["gateway_duration_us"].as_i64().expect("gateway duration");
        assert!(
            gateway <= client,
            "the gateway's part is inside the client's: {c}"
        );
        assert_eq!(c["command_line"], "kubectl get po nope -n dev");
    }

    // Errors: an unknown prefix, a prefix --remote cannot use, a user reading others' records.
    let (code, out) = env.ztk(&["audit", "show", "zzzzzzzz"]).failure();
    assert_eq!(code, 1);
    assert!(out.contains("no command"), "{out}");
    let (code, _) = env
        .ztk(&["audit", "show", &id[id.len() - 8..], "--remote"])
        .failure();
    assert_eq!(code, 2);
    let (_, out) = env
        .ztk(&["audit", "list", "--remote", "--user", "bob"])
        .failure();
    assert!(out.contains("only their own"), "{out}");
    // An administrator sees everyone's.
    env.login_as("root");
    let all = ndjson(
        &env.ztk(&[
            "audit", "list", "--remote", "--view", "calls", "-o", "ndjson", "--user", "alice",
        ])
        .success(),
    );
    assert!(all.len() >= calls.len());
}

#[test]
fn exports_survive_hostile_strings_and_read_back_with_a_real_csv_parser() {
    let env = Env::start();
    let store = env.local_store();
    let hostile = [
        "comma, inside",
        "quote \" inside",
        "new\nline",
        "=HYPERLINK(\"http://x\")",
        "+1+1",
        "-2",
        "@SUM(A1)",
        "\tstarts with tab",
        "\rstarts with CR",
        "ünïcödé ✓",
    ];
    let (sink, writer) = store.start_writer(16).unwrap();
    let mut ids = Vec::new();
    for (i, text) in hostile.iter().enumerate() {
        let cmd = ztk::audit::Command {
            id: uuid::Uuid::now_v7(),
            started_us: 1_700_000_000_000_000 + i as i64,
            ended_us: Some(1_700_000_000_100_000 + i as i64),
            user: text.to_string(),
            cluster: "c".into(),
            argv: vec!["kubectl".into(), text.to_string()],
            command_line: format!("kubectl {text}"),
            ..Default::default()
        };
        let call = ztk::audit::ApiCall {
            id: uuid::Uuid::now_v7(),
            time_us: 1_700_000_000_000_000 + i as i64,
            user: text.to_string(),
            path: format!("/api/v1/namespaces/{text}/pods"),
            user_agent: text.to_string(),
            command_id: Some(cmd.id),
            decision: "allow".into(),
            status: 200,
            ..Default::default()
        };
        ids.push(call.id);
        sink.record_command(cmd);
        sink.record_call(call);
    }
    drop(sink);
    writer.close();
    // Bytes that are not UTF-8, as a hand edit with the sqlite3 CLI could leave them.
    let db = env.path("client/data/audit.db");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "UPDATE api_calls SET path = CAST(X'2F6170692F76312FFF' AS TEXT) WHERE id = '{}'",
            ids[0]
        ))
        .status()
        .unwrap();
    assert!(status.success());

    let out = env.path("calls.csv");
    env.ztk(&[
        "audit",
        "export",
        "--csv",
        "--view",
        "calls",
        "-o",
        out.to_str().unwrap(),
    ])
    .success();
    let script = "import csv, json, sys\nrows = list(csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8')))\nprint(json.dumps(rows))";
    let parsed = Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(rows.len(), hostile.len());
    let neutral = |s: &str| {
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        }
    };
    for row in &rows {
        let i = ids
            .iter()
            .position(|id| row["id"] == id.to_string())
            .unwrap();
        let text = hostile[i];
        assert_eq!(row["user"], neutral(text).as_str(), "user of row {i}");
        assert_eq!(row["user_agent"], neutral(text).as_str());
        assert_eq!(row["command_line"], format!("kubectl {text}").as_str());
        assert!(
            row["time"].as_str().unwrap().ends_with('Z'),
            "UTC timestamps: {row}"
        );
        if i == 0 {
            assert_eq!(
                row["path"], "/api/v1/\u{FFFD}",
                "invalid UTF-8 is replaced, not fatal"
            );
        } else {
            assert_eq!(
                row["path"],
                format!("/api/v1/namespaces/{text}/pods").as_str()
            );
        }
    }

    // The commands view exports too; JSON and k8s-audit stay valid documents.
    let cmds = env
        .ztk(&["audit", "export", "--view", "commands"])
        .success();
    assert_eq!(cmds.lines().next().unwrap(), "started,ended,user,cluster,command_line,exit_code,calls,statuses,duration_us,access_method,cwd,host,id,reason");
    let events: Value = serde_json::from_str(
        &env.ztk(&["audit", "export", "--format", "k8s-audit"])
            .success(),
    )
    .unwrap();
    assert_eq!(events["kind"], "EventList");
    assert_eq!(events["items"].as_array().unwrap().len(), hostile.len());
    for item in events["items"].as_array().unwrap() {
        for field in [
            "level",
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "user",
            "sourceIPs",
            "userAgent",
            "responseStatus",
            "requestReceivedTimestamp",
            "stageTimestamp",
            "annotations",
        ] {
            assert!(item.get(field).is_some(), "missing {field} in {item}");
        }
    }
    // An export that cannot be written leaves nothing behind and says why.
    let (code, err) = env
        .ztk(&["audit", "export", "-o", "/nonexistent-dir/x.csv"])
        .failure();
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent-dir"), "{err}");
    let (code, _) = env
        .ztk(&[
            "audit",
            "export",
            "--view",
            "commands",
            "--format",
            "k8s-audit",
        ])
        .failure();
    assert_eq!(code, 2);
}

#[test]
fn tables_and_show_escape_terminal_control_characters_of_records() {
    let env = Env::start();
    env.add_user("root", &["ztk-admins"]);
    env.login();
    // A clear-screen and an OSC 52 clipboard write in argv, as a hostile user could record them;
    // kubectl asks for pods of those names, so the calls carry them too.
    let clear = "\x1b[2J";
    let clipboard = "\x1b]52;c;aGVsbG8=\x07";
    let out = env
        .kubectl(&["get", "po", clear, clipboard, "-n", "dev"])
        .output();
    assert!(!out.status.success());
    let commands = ndjson(&env.ztk(&["audit", "list", "-o", "ndjson"]).success());
    let id = commands[0]["id"].as_str().unwrap().to_string();
    // Machine formats keep the exact data.
    assert!(
        commands[0]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == clipboard),
        "{}",
        commands[0]
    );

    let outputs = [
        env.ztk(&["audit", "list", "-o", "table"]).success(),
        env.ztk(&["audit", "list", "-o", "wide"]).success(),
        env.ztk(&["audit", "list", "--view", "calls", "-o", "wide"])
            .success(),
        env.ztk(&["audit", "show", &id, "-o", "table"]).success(),
        env.ztk(&["audit", "show", &id, "-o", "wide"]).success(),
        env.ztk(&["audit", "list", "--remote", "-o", "table"])
            .success(),
        env.ztk(&["audit", "list", "--remote", "--view", "calls", "-o", "wide"])
            .success(),
        env.ztk(&["audit", "show", &id, "--remote", "-o", "table"])
            .success(),
        env.gateway_cmd(&["audit", "-o", "wide"]).success(),
        env.gateway_cmd(&["audit", "--view", "calls", "-o", "wide"])
            .success(),
    ];
    for (i, text) in outputs.iter().enumerate() {
        assert!(
            !text.contains(['\x1b', '\x07']),
            "output {i} holds a raw control character:\n{text:?}"
        );
        assert!(
            text.contains(r"\x1b"),
            "output {i} shows the escape:\n{text}"
        );
    }
    assert!(
        outputs[3].contains(r"\x1b]52;c;aGVsbG8=\x07"),
        "{}",
        outputs[3]
    );
}

#[test]
fn filters_with_too_many_values_are_usage_errors_and_the_api_answers_400() {
    let env = Env::start();
    env.login();
    let mut args = vec!["audit", "list", "--remote"];
    let users: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    for u in &users {
        args.extend(["--user", u.as_str()]);
    }
    let (code, out) = env.ztk(&args).failure();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("too many values for user: 1000, at most 100"),
        "{out}"
    );
    // Locally too, and in the TUI's filter language.
    let mut args = vec!["audit", "list", "--namespace", "a"];
    for _ in 0..101 {
        args.extend(["--verb", "get"]);
    }
    let (code, out) = env.ztk(&args).failure();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("too many values for verb"), "{out}");
    let query = format!("ns:{}", users[..101].join(","));
    let (code, out) = env.ztk(&["audit", "tui", "--filter", &query]).failure();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("too many values for namespace"), "{out}");

    // The gateway checks the same bounds: 400 with a Kubernetes Status, not a 500.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = env.gateway_api();
    rt.block_on(async {
        let token = api
            .login("alice", PASSWORD, None)
            .await
            .unwrap()
            .token
            .unwrap();
        let query = ztk::protocol::AuditQuery {
            view: ztk::protocol::View::Calls,
            filter: ztk::audit::Filter {
                namespaces: users.clone(),
                ..Default::default()
            },
            after: None,
            limit: 10,
        };
        let err = api
            .query::<ztk::audit::CallRow>(&token, &query)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("400") && err.contains("too many values for namespace"),
            "{err}"
        );
        let tail = ztk::protocol::AuditTail {
            filter: query.filter.clone(),
            after_seq: Some(0),
            wait_ms: 0,
            limit: 10,
        };
        let err = api.tail(&token, &tail).await.unwrap_err().to_string();
        assert!(err.contains("400"), "{err}");
    });
}
