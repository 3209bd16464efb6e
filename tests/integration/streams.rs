//! Streams and upgrades through both hops: exec, attach, cp and port-forward (WebSocket and
//! SPDY), logs -f and get -w, through `ztk kubectl` and through plain kubectl with the generated
//! kubeconfig, with every kubectl version on the machine.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ztk::audit::Filter;

use crate::harness::*;

/// Both ways of running kubectl: `ztk kubectl ARGS` and plain kubectl with the kubeconfig.
fn both(env: &Env, args: &[&str]) -> [Cmd; 2] {
    [env.kubectl(args), env.plain("kubectl", args)]
}

#[test]
fn exec_and_cp_work_through_both_paths_and_are_recorded_when_they_end() {
    let env = Env::start();
    env.setup_plain();
    for (i, [via_ztk, plain]) in [both(
        &env,
        &[
            "exec",
            "-n",
            "dev",
            "debug-shell",
            "--",
            "sh",
            "-c",
            "echo hello from $HOSTNAME; echo 'two  words'",
        ],
    )]
    .into_iter()
    .enumerate()
    {
        for cmd in [via_ztk, plain] {
            let out = cmd.success();
            assert_eq!(out, "hello from $HOSTNAME\ntwo  words\n", "run {i}");
        }
    }
    let (code, out) = env
        .plain(
            "kubectl",
            &["exec", "-n", "dev", "debug-shell", "--", "cat", "/nope"],
        )
        .failure();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("No such file or directory"), "{out}");

    // cp both ways: up through ztk kubectl, back down through plain kubectl, and the reverse.
    let local = env.path("up.txt");
    write(&local, "payload for the pod\nline two\n");
    env.kubectl(&["cp", local.to_str().unwrap(), "dev/debug-shell:/tmp/up.txt"])
        .success();
    let back = env.path("back.txt");
    env.plain(
        "kubectl",
        &["cp", "dev/debug-shell:/tmp/up.txt", back.to_str().unwrap()],
    )
    .success();
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "payload for the pod\nline two\n"
    );
    env.plain(
        "kubectl",
        &[
            "cp",
            local.to_str().unwrap(),
            "dev/debug-shell:/tmp/plain.txt",
        ],
    )
    .success();
    let listing = env
        .kubectl(&["exec", "-n", "dev", "debug-shell", "--", "ls", "/tmp"])
        .success();
    assert_eq!(listing, "plain.txt\nup.txt\n");
    let back2 = env.path("back2.txt");
    env.kubectl(&[
        "cp",
        "dev/debug-shell:/tmp/plain.txt",
        back2.to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        std::fs::read(&back2).unwrap(),
        std::fs::read(&local).unwrap()
    );

    // The same over SPDY, forced as kubectl's opt-out does.
    let spdy = env.path("spdy.txt");
    write(&spdy, "over SPDY\n");
    env.plain(
        "kubectl",
        &[
            "cp",
            spdy.to_str().unwrap(),
            "dev/debug-shell:/tmp/spdy.txt",
        ],
    )
    .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
    .success();
    let spdy_back = env.path("spdy-back.txt");
    env.kubectl(&[
        "cp",
        "dev/debug-shell:/tmp/spdy.txt",
        spdy_back.to_str().unwrap(),
    ])
    .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
    .success();
    assert_eq!(std::fs::read_to_string(&spdy_back).unwrap(), "over SPDY\n");

    // attach: the sandbox pod's main process echoes its input.
    for websockets in ["true", "false"] {
        let out = env
            .plain("kubectl", &["attach", "-i", "-n", "dev", "debug-shell"])
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .stdin_text("typed into attach\n")
            .success();
        assert_eq!(out, "typed into attach\n", "websockets={websockets}");
    }

    // Each exec is one record on each side, with its bytes, written when the stream ended.
    let execs = env.local_calls(
        &Filter {
            resources: vec!["pods/exec".into()],
            ..Default::default()
        },
        6,
    );
    let cp_up = execs
        .iter()
        .find(|r| {
            r.command_line
                .as_deref()
                .is_some_and(|c| c.starts_with("kubectl cp") && c.ends_with("/tmp/up.txt"))
                && r.call.status == 101
                && r.call.bytes_in > 0
        })
        .unwrap_or_else(|| panic!("no cp upload exec in {execs:#?}"));
    assert!(
        cp_up.call.bytes_in >= 1024,
        "the tar went up: {:?}",
        cp_up.call
    );
    assert_eq!(cp_up.call.reason, "");
    let gw = env.gateway_calls(
        &Filter {
            resources: vec!["pods/exec".into()],
            ..Default::default()
        },
        execs.len(),
    );
    let twin = gw
        .iter()
        .find(|g| g.call.request_id == Some(cp_up.call.id))
        .expect("gateway record of the cp upload");
    assert_eq!(twin.call.status, 101);
    assert!(twin.call.bytes_in >= 1024);
}

#[test]
fn logs_follow_and_watch_stream_through_the_persistent_proxy() {
    let env = Env::start();
    env.setup_plain();
    let mut watch = env
        .plain("kubectl", &["get", "po", "-n", "dev", "-w"])
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
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no output from get -w");
    assert!(first.contains("NAME"), "{first}");
    env.plain(
        "kubectl",
        &["run", "watched", "-n", "dev", "--image", "busybox:1.36"],
    )
    .success();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = line.contains("watched");
        }
    }
    assert!(seen, "the watch saw the new pod");
    let _ = watch.kill();
    let _ = watch.wait();

    let mut logs = env
        .plain("kubectl", &["logs", "-f", "debug-shell", "-n", "dev"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a log line").unwrap();
    assert!(line.contains("debug-shell"), "{line}");
    let _ = logs.kill();
    let _ = logs.wait();

    // The watch was recorded when it ended, with the command that opened it.
    let watches = env.local_calls(
        &Filter {
            verbs: vec!["watch".into()],
            ..Default::default()
        },
        1,
    );
    let w = watches
        .iter()
        .find(|r| r.command_line.as_deref() == Some("kubectl get po -n dev -w"))
        .unwrap_or_else(|| panic!("{watches:#?}"));
    assert!(
        w.call.bytes_out > 0 && w.call.duration_us > 0,
        "{:?}",
        w.call
    );
}

#[test]
fn an_open_stream_is_visible_before_it_ends() {
    let env = Env::start();
    env.setup_plain();
    for via_ztk in [false, true] {
        // Different flags per round, so that each round finds its own command's records.
        let container = if via_ztk { "-cdebug-shell" } else { "-i" };
        let args = [
            "exec",
            "-i",
            container,
            "-n",
            "dev",
            "debug-shell",
            "--",
            "cat",
        ];
        let command_line = format!("kubectl {}", args.join(" "));
        let cmd = if via_ztk {
            env.kubectl(&args)
        } else {
            env.plain("kubectl", &args)
        };
        let mut cmd = cmd.cmd;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let filter = Filter {
            resources: vec!["pods/exec".into()],
            commands: vec![command_line.clone()],
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let open = loop {
            let rows = env.local_store().list_calls(&filter).unwrap();
            if let Some(row) = rows.into_iter().find(|r| r.call.reason == "stream open") {
                break row;
            }
            assert!(
                Instant::now() < deadline,
                "no open-stream record while cat runs"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(open.call.status, 101);
        // The gateway may not have the command yet (a plain kubectl's goes when it is idle).
        let gw_filter = Filter {
            resources: vec!["pods/exec".into()],
            ..Default::default()
        };
        // Poll for this round's record: the earlier round's already match the filter.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gw_open = env.gateway_calls(&gw_filter, 1);
            if gw_open
                .iter()
                .any(|r| r.call.request_id == Some(open.call.id) && r.call.reason == "stream open")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{gw_open:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"through the stream\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "through the stream\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = env.local_store().list_calls(&filter).unwrap();
            // One row per stream: the final record replaces the open one.
            assert_eq!(rows.iter().filter(|r| r.call.id == open.call.id).count(), 1);
            let row = rows.iter().find(|r| r.call.id == open.call.id).unwrap();
            if row.call.reason.is_empty() {
                assert!(
                    row.call.bytes_in > 19 && row.call.bytes_out > 19,
                    "{:?}",
                    row.call
                );
                assert!(row.call.duration_us >= open.call.duration_us);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stream's final record never came: {row:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The kubectl versions on the machine (1.27 .. 1.33).
fn kubectl_versions() -> Vec<(u32, String)> {
    (27..=33)
        .map(|minor| {
            (
                minor,
                format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"),
            )
        })
        .collect()
}

/// Runs a `kubectl port-forward … 0:8080` command, sends a line through the forwarded port and
/// checks that the pod's echo server sends it back; then stops kubectl.
#[track_caller]
pub(crate) fn port_forward_echoes(cmd: Cmd, what: &str) {
    use std::io::{Read, Write};
    let mut cmd = cmd.cmd;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = match lines.next() {
        Some(Ok(line)) => line,
        _ => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: no output: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let port: u16 = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {line}"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let message = format!("hello through both hops, {what}\n");
    conn.write_all(message.as_bytes()).unwrap();
    let mut got = vec![0u8; message.len()];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), message, "{what}");
    drop(conn);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let _ = child.wait();
}

#[test]
fn every_kubectl_version_gets_execs_and_port_forwards_through_both_paths() {
    let env = Env::start();
    env.setup_plain();
    let spdy = [
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
        ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
    ];
    for (minor, kubectl) in kubectl_versions() {
        let via_ztk = |args: &[&str]| {
            let mut all = vec!["--kubectl", kubectl.as_str()];
            all.extend_from_slice(args);
            env.kubectl(&all)
        };
        let get = ["get", "po", "-n", "dev", "debug-shell", "-o", "name"];
        assert_eq!(via_ztk(&get).success(), "pod/debug-shell\n", "1.{minor}");
        assert_eq!(
            env.plain(&kubectl, &get).success(),
            "pod/debug-shell\n",
            "1.{minor}"
        );

        // Each version's default protocol (WebSocket from 1.30, SPDY before), then SPDY forced.
        let exec = ["exec", "-n", "dev", "debug-shell", "--", "echo", "v", "ok"];
        assert_eq!(via_ztk(&exec).success(), "v ok\n", "1.{minor}");
        assert_eq!(env.plain(&kubectl, &exec).success(), "v ok\n", "1.{minor}");
        let mut forced = env.plain(&kubectl, &exec);
        for (k, v) in spdy {
            forced = forced.env(k, v);
        }
        assert_eq!(forced.success(), "v ok\n", "1.{minor} SPDY");

        let pf = ["port-forward", "-n", "dev", "pod/debug-shell", "0:8080"];
        port_forward_echoes(env.plain(&kubectl, &pf), &format!("1.{minor} plain"));
        let mut forced = via_ztk(&pf);
        for (k, v) in spdy {
            forced = forced.env(k, v);
        }
        port_forward_echoes(forced, &format!("1.{minor} ztk kubectl SPDY"));
    }
    // Every version's calls carry its own command line on the plain path.
    let rows = env.local_calls(&Filter::default(), 1);
    for (minor, _) in kubectl_versions() {
        let found = rows.iter().any(|r| {
            r.call.resource == "pods"
                && r.command_line.as_deref() == Some("kubectl get po -n dev debug-shell -o name")
                && r.call.user_agent.contains(&format!("/v1.{minor}."))
        });
        assert!(found, "no get pods of 1.{minor}");
    }
    // Port-forwards were relayed as upgrades, WebSocket (GET) and SPDY (POST), with their bytes.
    let forwards = env.local_calls(
        &Filter {
            resources: vec!["pods/portforward".into()],
            ..Default::default()
        },
        14,
    );
    for method in ["GET", "POST"] {
        assert!(
            forwards.iter().any(|r| r.call.method == method
                && r.call.status == 101
                && r.call.bytes_in > 0
                && r.call.bytes_out > 0),
            "{method}: {forwards:#?}"
        );
    }
}

#[test]
fn exec_with_a_terminal_works_through_both_paths() {
    let env = Env::start();
    env.setup_plain();
    // `script` gives kubectl a pseudo-terminal, as a user's shell would.
    let exec = "exec -it -n dev debug-shell -- sh -c 'echo tty ok; cat /nope'";
    for (program, kubeconfig) in [
        (format!("{} kubectl", ztk_bin()), None),
        ("kubectl".to_string(), Some(env.plain_kubeconfig())),
    ] {
        for websockets in ["true", "false"] {
            let mut cmd = env
                .program(
                    "script",
                    &["-qec", &format!("{program} {exec}"), "/dev/null"],
                )
                .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets);
            if let Some(path) = &kubeconfig {
                cmd = cmd.env("KUBECONFIG", path);
            }
            let out = cmd.output();
            let text = String::from_utf8_lossy(&out.stdout);
            // With a terminal, stderr arrives on stdout; the exit code is the command's.
            assert!(text.contains("tty ok"), "{program} ws={websockets}: {text}");
            assert!(text.contains("No such file or directory"), "{text}");
            assert!(
                text.contains("exit code 1"),
                "{program} ws={websockets}: {text}"
            );
        }
    }
}
