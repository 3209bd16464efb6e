//! `ztk audit tui` driven in a real terminal: the binary runs in tmux (a private server per
//! test), keys go in with send-keys and the screen comes back with capture-pane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ztk::audit::{ApiCall, AuditStore};

use crate::harness::*;

/// A tmux server of its own (so parallel tests never share one), killed on drop.
struct Tmux {
    socket: String,
    /// The server's socket file, removed at the end (kill-server leaves it behind).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Runs `ztk ARGS` in a new 120×40 session in `cwd`, with `env`. When ztk exits the pane
    /// prints its exit code and stays, so the test can see the restored terminal.
    fn start(cwd: &Path, env: &[(&str, PathBuf)], args: &[&str]) -> Tmux {
        let socket = format!(
            "ztk-tui-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let mut line = String::from("env");
        for (k, v) in env {
            line.push_str(&format!(" {k}='{}'", v.display()));
        }
        line.push_str(&format!(" '{}'", ztk_bin()));
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        line.push_str("; echo \"ztk exited with $?\"; sleep 600");
        let mut tmux = Tmux {
            socket,
            socket_path: None,
        };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-x", "120", "-y", "40", "-c"])
            .arg(cwd)
            .args(["sh", "-c", &line])
            .env_remove("TMUX")
            .status()
            .expect("tmux runs (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        let path = tmux
            .cmd()
            .args(["display-message", "-p", "#{socket_path}"])
            .output()
            .unwrap();
        tmux.socket_path = Some(String::from_utf8_lossy(&path.stdout).trim().into());
        tmux
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    /// `tmux send-keys` with key names (Enter, Escape, Tab) or literal text (`-l`).
    fn keys(&self, keys: &[&str]) {
        let status = self.cmd().arg("send-keys").args(keys).status().unwrap();
        assert!(status.success());
        // An Escape immediately followed by a key reads as Alt+key: keep keys apart.
        std::thread::sleep(Duration::from_millis(150));
    }

    fn text(&self, text: &str) {
        let status = self.cmd().args(["send-keys", "-l", text]).status().unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(150));
    }

    fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok` (at most 20 s); returns it.
    #[track_caller]
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[track_caller]
    fn wait_for(&self, text: &str) -> String {
        self.wait(text, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The table rows on a screen (between the header and the status line), split into cells.
fn table_rows(screen: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("TIME (UTC)"))
        .expect("a table header");
    lines[header + 1..]
        .iter()
        .take_while(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn client_env(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("ZTK_CONFIG_DIR", dir.join("config")),
        ("ZTK_DATA_DIR", dir.join("data")),
        ("ZTK_TOKEN_STORE", "file".into()),
        ("HOME", dir.join("home")),
    ]
}

#[test]
fn tui_opens_filters_drills_down_refreshes_exports_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let seed = Command::new(ztk_bin())
        .args(["audit", "seed", "--count", "3000"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(seed.status.success(), "{seed:?}");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let tmux = Tmux::start(&work, &env, &["audit", "tui"]);

    // Open: the commands view, newest first, more rows behind the first page.
    let screen = tmux.wait_for("│ commands │ 200+ rows │ live");
    let rows = table_rows(&screen);
    assert_eq!(
        rows.len(),
        36,
        "a 40-line terminal shows 36 rows:\n{screen}"
    );
    assert!(screen.contains("filter: (none: / to filter)"));

    // Filter.
    tmux.keys(&["/"]);
    tmux.text("user:alice verb:delete");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait("the filtered commands", |s| {
        s.contains("filter: user:alice verb:delete")
            && !s.contains("loading")
            && table_rows(s).len() > 3
    });
    for row in table_rows(&screen) {
        assert_eq!(row[2], "alice", "{screen}");
    }
    // A bad filter is an inline error, not a crash; Esc keeps the filter as it was.
    tmux.keys(&["/"]);
    tmux.text(" status:9xx");
    tmux.keys(&["Enter"]);
    tmux.wait_for("invalid status \"9xx\"");
    tmux.keys(&["Escape"]);
    tmux.wait_for("filter: user:alice verb:delete");

    // Drill down: a command's calls, then every field of a call.
    tmux.keys(&["Enter"]);
    let screen = tmux.wait("the command's calls", |s| {
        s.contains("calls of `kubectl") && table_rows(s).len() > 1
    });
    for row in table_rows(&screen) {
        assert_eq!(row[2], "alice", "{screen}");
    }
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("kubectl session");
    assert!(screen.contains("user agent  kubectl/"), "{screen}");
    assert!(screen.contains("client duration"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("calls of `kubectl");
    tmux.keys(&["Escape"]);
    tmux.wait_for("│ commands │");

    // The calls view, live: a new call shows within a second or so, at the top.
    tmux.keys(&["Tab"]);
    tmux.wait("the calls view", |s| {
        s.contains("│ API calls │") && table_rows(s).len() > 3
    });
    let store = AuditStore::open(&dir.path().join("data/audit.db")).unwrap();
    let (sink, writer) = store.start_writer(16).unwrap();
    sink.record_call(ApiCall {
        id: uuid::Uuid::now_v7(),
        time_us: ztk::audit::model::now_us(),
        user: "alice".into(),
        verb: "delete".into(),
        resource: "pods".into(),
        name: "live-one".into(),
        status: 200,
        ..Default::default()
    });
    assert!(sink.flush(Duration::from_secs(10)));
    drop(sink);
    writer.close();
    let screen = tmux.wait_for("live-one");
    assert!(
        table_rows(&screen)[0].contains(&"live-one".to_string()),
        "{screen}"
    );

    // Copy the new row as JSON: OSC 52 reaches tmux's paste buffer (with set-clipboard on).
    let status = tmux
        .cmd()
        .args(["set-option", "-g", "set-clipboard", "on"])
        .status()
        .unwrap();
    assert!(status.success());
    tmux.keys(&["g"]);
    tmux.keys(&["y"]);
    tmux.wait_for("copied the row as JSON (OSC 52 to the terminal");
    let buffer = tmux.cmd().arg("show-buffer").output().unwrap();
    let copied: serde_json::Value = serde_json::from_slice(&buffer.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buffer.stdout)));
    assert_eq!(copied["name"], "live-one");
    assert_eq!(copied["verb"], "delete");

    // Export the filtered view: the same file `ztk audit export` writes.
    tmux.keys(&["e"]);
    tmux.wait_for("export CSV to> ztk-audit-calls-");
    tmux.keys(&["C-u"]);
    tmux.text("view.csv");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait("the export", |s| s.contains("rows to view.csv"));
    let exported = std::fs::read_to_string(work.join("view.csv")).unwrap();
    let cli = Command::new(ztk_bin())
        .args([
            "audit", "export", "--view", "calls", "--user", "alice", "--verb", "delete",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(exported, String::from_utf8(cli.stdout).unwrap());
    let n = exported.lines().count() - 1;
    assert!(
        screen.contains(&format!("exported {n} rows to view.csv")),
        "{screen}"
    );
    assert!(exported.contains("live-one"));

    // Help lists the keys; q quits and gives the terminal back.
    tmux.keys(&["?"]);
    tmux.wait_for("copy the selected row as JSON");
    tmux.keys(&["Escape"]);
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("ztk exited with 0");
    assert!(
        !screen.contains("│ API calls │"),
        "the alternate screen is gone:\n{screen}"
    );
}

#[test]
fn tui_ctrl_c_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let tmux = Tmux::start(dir.path(), &env, &["audit", "tui", "--view", "calls"]);
    tmux.wait_for("no records match the filter");
    // Without a login the gateway source says so, in place of the rows.
    tmux.keys(&["r"]);
    tmux.wait_for("run `ztk login`");
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("ztk exited with 0");
    assert!(!screen.contains("ztk login"), "{screen}");
    // The shell's terminal is back in cooked mode: a typed line echoes.
    tmux.text("echo cooked");
    tmux.keys(&["Enter"]);
    // (sleep is reading the pane; the echo proves the tty echoes input again.)
    tmux.wait_for("echo cooked");
}

#[test]
fn tui_sigterm_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let tmux = Tmux::start(dir.path(), &env, &["audit", "tui"]);
    tmux.wait_for("no records match the filter");
    let pane = tmux
        .cmd()
        .args(["list-panes", "-F", "#{pane_pid}"])
        .output()
        .unwrap();
    let shell = String::from_utf8(pane.stdout).unwrap().trim().to_string();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let pid: i32 = children
        .split_whitespace()
        .next()
        .expect("ztk runs under the pane's shell")
        .parse()
        .unwrap();
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let screen = tmux.wait_for("ztk exited with 0");
    assert!(!screen.contains("no records match"), "{screen}");
}

#[test]
fn tui_remote_shows_the_gateway_log_of_the_user() {
    let env = Env::start();
    env.login();
    let gateway_db = env.path("gw/audit.db");
    env.ztk(&[
        "audit",
        "seed",
        "--count",
        "400",
        "--db",
        gateway_db.to_str().unwrap(),
    ])
    .success();
    let client = vec![
        ("ZTK_CONFIG_DIR", env.path("client/config")),
        ("ZTK_DATA_DIR", env.path("client/data")),
        ("ZTK_TOKEN_STORE", "file".into()),
        ("HOME", env.path("home")),
    ];
    // Starts on the (empty) local store; `r` switches to the gateway.
    let tmux = Tmux::start(
        env.dir.path(),
        &client,
        &["audit", "tui", "--view", "calls"],
    );
    tmux.wait_for("no records match the filter");
    tmux.keys(&["r"]);
    let screen = tmux.wait("the gateway's calls", |s| {
        s.contains(&format!("ztk audit · gateway {}", env.url)) && table_rows(s).len() > 3
    });
    // alice is no admin: the gateway answers with her records only.
    for row in table_rows(&screen) {
        assert_eq!(row[2], "alice", "{screen}");
    }
    tmux.keys(&["q"]);
    tmux.wait_for("ztk exited with 0");

    let tmux = Tmux::start(
        env.dir.path(),
        &client,
        &["audit", "tui", "--remote", "--filter", "verb:delete"],
    );
    let screen = tmux.wait("the gateway's commands", |s| {
        s.contains("│ commands │") && s.contains("gateway https://") && !table_rows(s).is_empty()
    });
    assert!(screen.contains("filter: verb:delete"));
    for row in table_rows(&screen) {
        assert_eq!(row[2], "alice", "{screen}");
        assert!(row.contains(&"delete".to_string()), "{screen}");
    }
    tmux.keys(&["q"]);
    tmux.wait_for("ztk exited with 0");
}

#[test]
fn tui_refuses_a_bad_filter_and_a_missing_terminal_with_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let run = |args: &[&str]| {
        Command::new(ztk_bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let out = run(&["audit", "tui", "--filter", "status:9xx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid status \"9xx\""));
    let out = run(&["audit", "tui"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
}
