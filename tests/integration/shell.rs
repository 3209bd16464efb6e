//! kubectl in the browser: end to end in Debian's chromium (`tests/browser/shell.mjs`), and the
//! shell's socket, limits, credentials and confinement with a WebSocket client and a stand-in
//! kubectl that shows what a command can see.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::harness::{https_client, Env, PASSWORD};
use ztk::audit::{AccessMethod, Filter};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Lines the shell must refuse (the issue's list, and the rest of the refused kinds).
const REFUSED: &[&str] = &[
    "kubectl get pods; cat /etc/passwd",
    "kubectl apply -f /etc/passwd",
    "kubectl config view --raw",
    "kubectl proxy",
    "kubectl port-forward web-f4xbb9mvgl-fh794 8080:80",
    "kubectl cp dev/web-f4xbb9mvgl-fh794:/etc/passwd passwd",
    "kubectl krew-search",
    "kubectl get pods --kubeconfig /etc/passwd",
    "kubectl get pods -s https://example.com",
    "kubectl get pods --token x",
    "kubectl get pods -o go-template-file=/etc/passwd",
    "kubectl get pods | tee /tmp/x",
    "kubectl get pods $(cat /etc/passwd)",
    "cat /etc/passwd",
    "kubectl apply -k /etc",
];

#[test]
fn the_web_shell_in_a_real_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: README's test command (scripts/test.sh) installs it"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing in tests/browser: README's test command (scripts/test.sh) installs it"
    );
    let env = Env::start();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shell-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let config = serde_json::json!({
        "url": env.url,
        "ztk": crate::harness::ztk_bin(),
        "config": env.config,
        "shots": shots,
        "alice": { "user": "alice", "password": PASSWORD },
        "refused": REFUSED,
    });
    let out = Command::new("node")
        .arg("shell.mjs")
        .current_dir(browser_dir())
        .env("ZTK_SHELL_TEST", config.to_string())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    eprintln!("shell browser test: {result}");
    assert!(
        result["revokeToClosedMs"].as_u64().unwrap() < 2_000,
        "revocation closes the shell within a second (plus the browser's polling): {result}"
    );

    // The trail: every command with access method browser, linked to its calls.
    let store = env.gateway_store();
    let wait_for = |line: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = store.list_commands(&Filter::default()).unwrap();
            if let Some(row) = rows
                .into_iter()
                .find(|r| r.command.command_line == line && r.command.ended_us.is_some())
            {
                return row.command;
            }
            assert!(Instant::now() < deadline, "no ended command {line:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let get = wait_for("kubectl get pods -n dev");
    assert_eq!(get.access_method, AccessMethod::Browser);
    assert_eq!(
        (get.user.as_str(), get.cluster.as_str()),
        ("alice", "sandbox")
    );
    assert_eq!(get.exit_code, Some(0));
    assert!(get.reason.is_empty(), "{}", get.reason);
    let calls = store
        .list_calls(&Filter::default())
        .unwrap()
        .into_iter()
        .filter(|c| c.call.command_id == Some(get.id))
        .collect::<Vec<_>>();
    assert_eq!(
        calls.len() as i64,
        get.api_calls,
        "the command counts its calls"
    );
    assert!(
        calls.iter().any(|c| c.call.resource == "pods"
            && c.call.namespace == "dev"
            && c.call.status == 200
            && c.call.verb == "list"),
        "{calls:#?}"
    );
    for c in &calls {
        assert_eq!(c.call.access_method, AccessMethod::Browser);
        assert_eq!(c.call.user, "alice");
        assert_eq!(c.call.source_ip, "127.0.0.1");
    }
    // kubectl names itself on its calls (discovery from its cache does not).
    assert!(
        calls
            .iter()
            .any(|c| c.call.kubectl_command == "kubectl get"),
        "{calls:#?}"
    );
    for line in REFUSED {
        // Recorded as typed, secrets redacted (like the CLI's).
        let typed = ztk::shell::line::split(line).unwrap_or_else(|_| vec![line.to_string()]);
        let shown = ztk::audit::redact::shell_join(&ztk::audit::redact::redact_argv(&typed));
        let c = wait_for(&shown);
        assert!(c.reason.starts_with("refused: "), "{line}: {c:?}");
        assert_eq!((c.exit_code, c.api_calls), (None, 0), "{line}");
        assert_eq!(c.access_method, AccessMethod::Browser);
    }
    let exec = wait_for("kubectl exec -it web-f4xbb9mvgl-fh794 -n dev -- sh");
    assert_eq!(exec.exit_code, Some(0), "{exec:?}");
    let watch = wait_for("kubectl get pods -n dev -w");
    assert!(watch.exit_code.is_some_and(|c| c != 0), "{watch:?}");
    let apply = wait_for("kubectl apply -f -");
    assert_eq!(apply.exit_code, Some(0), "{apply:?}");
    let logs = wait_for("kubectl logs -f web-f4xbb9mvgl-fh794 -n dev");
    assert!(
        logs.reason.starts_with("stopped: ") && logs.reason.contains("session"),
        "{logs:?}"
    );
    // The gateway's CLI lists them by access method.
    let listed = env
        .gateway_cmd(&[
            "audit",
            "--view",
            "commands",
            "--access-method",
            "browser",
            "-o",
            "json",
            "--since",
            "1h",
        ])
        .success();
    assert!(
        listed.contains("kubectl get pods -n dev") && listed.contains("refused: "),
        "{listed}"
    );
}

/// A TLS WebSocket client for the shell's socket, with the session cookie and an `Origin`.
async fn connect(
    env: &Env,
    token: &str,
    query: &str,
    origin: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let host = host_of(env);
    let mut tls = ztk::tls::client_config(
        &ztk::tls::Roots::Pem(std::fs::read(env.ca_file()).unwrap()),
        None,
    )
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let req = http::Request::get(format!("wss://{host}/shell/socket?{query}"))
        .header("host", &host)
        .header("origin", origin.replace("HOST", &host))
        .header("cookie", format!("__Host-ztk={token}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Reads until the `t` event `until` arrives: the terminal's text and that event.
async fn read_until(ws: &mut Ws, until: &str) -> (String, serde_json::Value) {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {until} event; so far:\n{text}"));
        match msg {
            Some(Ok(Message::Binary(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["t"] == until {
                    return (text, v);
                }
                assert_ne!(v["t"], "closed", "{v}\n{text}");
            }
            Some(Ok(_)) => {}
            other => panic!("the shell ended before {until}: {other:?}\n{text}"),
        }
    }
}

async fn hello(ws: &mut Ws, token: &str) {
    let csrf = ztk::console::csrf_of(token);
    ws.send(Message::text(
        serde_json::json!({"t": "hello", "csrf": csrf, "cols": 120, "rows": 40}).to_string(),
    ))
    .await
    .unwrap();
    read_until(ws, "ready").await;
}

async fn run_line(ws: &mut Ws, line: &str) -> (String, serde_json::Value) {
    ws.send(Message::text(
        serde_json::json!({"t": "run", "line": line}).to_string(),
    ))
    .await
    .unwrap();
    read_until(ws, "exit").await
}

async fn status_of(env: &Env, token: Option<&str>, query: &str, origin: Option<&str>) -> u16 {
    let client = https_client(std::fs::read(env.ca_file()).unwrap());
    let mut req = http::Request::get(format!("{}/shell/socket?{query}", env.url))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(t) = token {
        req = req.header("cookie", format!("__Host-ztk={t}"));
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = client
        .request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// A stand-in for kubectl: shows what a shell command can see and reach, and holds its
/// directory for a while when asked (`kubectl get hold`).
const FAKE_KUBECTL: &str = r#"#!/bin/bash
echo "ARGS=$*"
echo "ENV=$(env | cut -d= -f1 | sort | tr '\n' ' ')"
echo "HOME=$HOME"
stat -c 'MODE=%a %n' "$HOME" "$HOME/.kube/config"
echo "CONFIG=$(tr -d '\n' < "$HOME/.kube/config")"
ls "$HOME/.." 2>&1 | sed 's/^/SIBLINGS=/'
for other in "$@"; do
  case "$other" in /*) ;; *) continue ;; esac
  echo "OTHER=$other"
  cat "$other/.kube/config" 2>&1 | sed 's/^/PEEK=/'
  ls -a "$other" 2>&1 | sed 's/^/LIST=/'
done
cat /etc/passwd 2>&1 | head -1 | sed 's/^/PASSWD=/'
case "$*" in *hold*) sleep 4 ;; *slow*) sleep 20 ;; esac
exit 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_are_confined_limited_and_their_credentials_die_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("kubectl");
    std::fs::write(&fake, FAKE_KUBECTL).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = tokio::task::block_in_place(|| {
        let env = Env::start_in(
            dir,
            &format!(
                "[shell]\nkubectl = \"{}\"\nmax_per_user = 1\ncommand_timeout = \"1s\"\nidle_timeout = \"6s\"\n",
                fake.display()
            ),
            "",
        );
        env.add_user("bob", &[]);
        env.role(&["bind", "view", "--user", "bob", "--namespace", "dev"]);
        env
    });
    let api = env.gateway_api();
    let alice = api
        .login("alice", PASSWORD, None)
        .await
        .unwrap()
        .token
        .unwrap();
    let bob = api
        .login("bob", PASSWORD, None)
        .await
        .unwrap()
        .token
        .unwrap();
    let same = "https://HOST";

    // The socket's gate: Origin, cookie, upgrade, a reachable cluster and a namespace name.
    let q = "cluster=sandbox&namespace=dev";
    assert_eq!(
        status_of(&env, Some(&alice), q, None).await,
        403,
        "no Origin"
    );
    let origin = format!("https://{}", host_of(&env));
    assert_eq!(
        status_of(&env, Some(&alice), q, Some("https://evil.example")).await,
        403
    );
    assert_eq!(status_of(&env, None, q, Some(&origin)).await, 401);
    assert_eq!(
        status_of(&env, Some("ztk_forged"), q, Some(&origin)).await,
        401
    );
    assert_eq!(
        status_of(
            &env,
            Some(&alice),
            "cluster=other&namespace=dev",
            Some(&origin)
        )
        .await,
        403
    );
    assert_eq!(
        status_of(
            &env,
            Some(&alice),
            "cluster=sandbox&namespace=Dev;",
            Some(&origin)
        )
        .await,
        400
    );

    // The CSRF token must come first.
    let mut ws = connect(&env, &alice, q, same).await.unwrap();
    ws.send(Message::text(r#"{"t":"hello","csrf":"guess"}"#))
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut ws).await;
    assert!(closed.contains("CSRF"), "{closed}");
    drop(ws);

    // alice's command holds its directory; bob's, at the same time, cannot see into it.
    let mut a = connect(&env, &alice, q, same).await.unwrap();
    hello(&mut a, &alice).await;
    // One shell per user (shell.max_per_user = 1).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status_of(&env, Some(&alice), q, Some(&origin)).await, 429);
    a.send(Message::text(
        // `-w`: interactive, so the 1 s command_timeout does not apply.
        serde_json::json!({"t": "run", "line": "kubectl get hold -w"}).to_string(),
    ))
    .await
    .unwrap();
    let mut alice_out = String::new();
    while !alice_out.contains("PASSWD=") {
        match a.next().await {
            Some(Ok(Message::Binary(b))) => alice_out.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(_)) => {}
            other => panic!("{other:?}: {alice_out}"),
        }
    }
    let config_line = alice_out
        .lines()
        .find(|l| l.starts_with("CONFIG="))
        .unwrap();
    let kubeconfig: serde_json::Value =
        serde_json::from_str(&config_line["CONFIG=".len()..]).unwrap();
    let token = kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let server = kubeconfig["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("ztks_"), "{token}");
    assert!(
        server.starts_with("https://127.0.0.1:") && server.ends_with("/k8s/sandbox"),
        "{server}"
    );
    assert_eq!(kubeconfig["contexts"][0]["context"]["namespace"], "dev");
    assert!(alice_out.contains("ARGS=--cache-dir="), "{alice_out}");
    assert!(
        alice_out.contains("ENV=HOME LANG PWD SHLVL TERM _ "),
        "an empty environment: {alice_out}"
    );
    assert!(
        alice_out.lines().any(|l| l.starts_with("MODE=700 ")),
        "{alice_out}"
    );
    assert!(
        alice_out.lines().any(|l| l.starts_with("MODE=600 ")),
        "{alice_out}"
    );
    assert!(
        alice_out.contains("PASSWD=") && !alice_out.contains("root:x:0"),
        "Landlock keeps /etc out: {alice_out}"
    );
    let ca = base64_decode(
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap(),
    );
    let shell_client = https_client::<http_body_util::Empty<bytes::Bytes>>(ca);
    let call =
        |client: &hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>>,
         url: String,
         token: String| {
            let req = http::Request::get(url)
                .header("authorization", format!("Bearer {token}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let fut = client.request(req);
            async move { fut.await.unwrap().status().as_u16() }
        };
    // While it runs, the credential works on the shell's port, for its cluster only, and
    // nowhere else.
    assert_eq!(
        call(
            &shell_client,
            format!("{server}/api/v1/namespaces/dev/pods"),
            token.clone()
        )
        .await,
        200
    );
    let public =
        https_client::<http_body_util::Empty<bytes::Bytes>>(std::fs::read(env.ca_file()).unwrap());
    assert_eq!(
        call(
            &public,
            format!("{}/k8s/sandbox/api/v1/namespaces/dev/pods", env.url),
            token.clone()
        )
        .await,
        401
    );
    // A session token is not a shell credential on the shell's port.
    assert_eq!(
        call(
            &shell_client,
            format!("{server}/api/v1/namespaces/dev/pods"),
            alice.clone()
        )
        .await,
        401
    );

    let mut b = connect(&env, &bob, q, same).await.unwrap();
    hello(&mut b, &bob).await;
    let home = alice_out
        .lines()
        .find_map(|l| l.strip_prefix("HOME="))
        .unwrap()
        .trim()
        .to_string();
    let (bob_out, exit) = run_line(&mut b, &format!("kubectl get peek {home}")).await;
    assert_eq!(exit["code"], 3, "{exit}");
    assert!(
        bob_out.contains("OTHER="),
        "bob's command sees that another exists: {bob_out}"
    );
    assert!(
        !bob_out.contains(&token)
            && !bob_out.contains("PEEK=apiVersion")
            && !bob_out.contains("PEEK={"),
        "{bob_out}"
    );
    assert!(
        bob_out.contains("PEEK=cat: ") && bob_out.contains("Permission denied"),
        "{bob_out}"
    );
    assert!(
        !bob_out.contains("LIST=.kube") && bob_out.contains("LIST=ls: "),
        "{bob_out}"
    );

    let (_, exit) = read_until(&mut a, "exit").await;
    assert_eq!(exit["code"], 3, "{exit}");
    // Ended: the credential is useless, and the command's directory is gone.
    assert_eq!(
        call(
            &shell_client,
            format!("{server}/api/v1/namespaces/dev/pods"),
            token.clone()
        )
        .await,
        401
    );
    assert!(!Path::new(&home).exists(), "{home} was removed");

    // The command's record counts the call made with its credential, access method browser.
    let store = env.gateway_store();
    let deadline = Instant::now() + Duration::from_secs(5);
    let held = loop {
        let rows = store.list_commands(&Filter::default()).unwrap();
        if let Some(r) = rows.into_iter().find(|r| {
            r.command.command_line == "kubectl get hold -w" && r.command.ended_us.is_some()
        }) {
            break r.command;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (held.exit_code, held.api_calls, held.access_method),
        (Some(3), 1, AccessMethod::Browser)
    );

    // A command that is not interactive is stopped at command_timeout, and says so.
    let started = Instant::now();
    let (_, exit) = run_line(&mut b, "kubectl get slow").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(exit["code"], 128 + 9, "{exit}");
    assert_eq!(
        exit["reason"], "stopped: ran longer than 1s (shell.command_timeout)",
        "{exit}"
    );
    // A manifest over 1 MiB is refused (and recorded).
    b.send(Message::text(
        serde_json::json!({"t": "run", "line": "kubectl apply -f -", "stdin": "y".repeat(1_500_000)})
            .to_string(),
    ))
    .await
    .unwrap();
    let (_, refused) = read_until(&mut b, "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("larger than 1 MiB"),
        "{refused}"
    );
    // alice's shell, idle since her command ended, closes after idle_timeout (6 s).
    let (_, closed) = read_until_closed(&mut a).await;
    assert!(closed.contains("without activity"), "{closed}");

    // A message over the frame limit ends the connection.
    let big = "x".repeat(3 << 20);
    let _ = b
        .send(Message::text(
            serde_json::json!({"t": "run", "line": "kubectl apply -f -", "stdin": big}).to_string(),
        ))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match b.next().await {
                Some(Ok(Message::Text(t)))
                    if t.contains("\"exit\"") || t.contains("\"started\"") =>
                {
                    return false
                }
                Some(Ok(_)) => continue,
                _ => return true,
            }
        }
    })
    .await
    .unwrap();
    assert!(ended, "a 3 MiB message closes the socket");
}

async fn read_until_closed(ws: &mut Ws) -> (String, String) {
    let mut text = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["t"] == "closed" {
                    return (text, v["reason"].as_str().unwrap_or("").to_string());
                }
            }
            Some(Ok(Message::Binary(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(_)) => {}
            _ => return (text, String::new()),
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// `127.0.0.1:PORT` of the gateway.
fn host_of(env: &Env) -> String {
    env.url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}
