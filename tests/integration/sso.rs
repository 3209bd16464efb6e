//! Single sign-on against a real OpenID provider (panva's oidc-provider from npm, started by the
//! test on a free port): the device flow and the CLI's loopback code flow completed in headless
//! Chromium, the console's code flow, a group from the claims granting access through a binding,
//! forged tokens refused, a provider that is down, and `password_login = false`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::harness::{https_client, Env, PASSWORD};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

const SECRET: &str = "console-client-secret-1";

struct Idp {
    child: Child,
    issuer: String,
}

impl Idp {
    fn start() -> Idp {
        assert!(
            browser_dir().join("node_modules/oidc-provider").exists(),
            "oidc-provider is missing in tests/browser: README's test command (scripts/test.sh) installs it"
        );
        let mut child = Command::new("node")
            .arg("oidc-provider.mjs")
            .current_dir(browser_dir())
            .env("ZTK_OIDC_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("the provider printed its issuer")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        // Keep reading: a provider writing to a closed pipe would die.
        std::thread::spawn(move || lines.map_while(Result::ok).count());
        Idp {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
        }
    }

    /// Registers the console's callback (known once the gateway listens).
    fn console_redirect(&mut self, url: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "redirect {url}/oidc/callback").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway trusting `issuer`, with `extra` top-level keys.
fn gateway(issuer: &str, extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oidc-secret"), format!("{SECRET}\n")).unwrap();
    Env::start_in(
        dir,
        &format!(
            "{extra}\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"ztk\"\nclient_secret_file = \"oidc-secret\"\ncli_client_id = \"ztk-cli\"\ngroups_prefix = \"oidc:\"\n"
        ),
        "",
    )
}

/// Runs tests/browser/sso.mjs.
fn browser(config: serde_json::Value) -> serde_json::Value {
    let out = Command::new("node")
        .arg("sso.mjs")
        .current_dir(browser_dir())
        .env("ZTK_SSO_TEST", config.to_string())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn wait_ok(mut child: Child) -> String {
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "ztk login failed: {err}");
    err
}

#[test]
fn single_sign_on_with_a_real_provider() {
    let mut idp = Idp::start();
    let env = gateway(&idp.issuer, "");
    idp.console_redirect(&env.url);
    env.role(&["bind", "view", "--group", "oidc:dev", "--namespace", "dev"]);
    let ca = env.ca_file();
    let ca = ca.to_str().unwrap();

    // The device flow, completed in a browser; the group from the claims grants view in dev.
    let (child, url, printed) = spawn_printing(env.ztk(&[
        "login",
        "--sso",
        "--device",
        "--gateway",
        &env.url,
        "--ca-file",
        ca,
    ]));
    assert!(printed.iter().any(|l| l.contains("code")), "{printed:?}");
    let page = browser(serde_json::json!({"mode": "visit", "url": url, "login": "dev-ada"}));
    eprintln!("device flow ended at {}", page["url"]);
    wait_ok(child);
    let status = env.ztk(&["status"]).success();
    assert!(
        status.contains("dev-ada@example.com") && status.contains("oidc:dev"),
        "{status}"
    );
    assert!(status.contains("single sign-on, device flow"), "{status}");
    let pods = env.ztk(&["kubectl", "get", "pods", "-n", "dev"]).success();
    assert!(pods.contains("web-"), "{pods}");
    let (_, denied) = env
        .ztk(&["kubectl", "delete", "pod", "nope", "-n", "dev"])
        .failure();
    assert!(denied.contains("forbidden"), "{denied}");
    // Signing in again keeps the valid session.
    let again = env
        .ztk(&[
            "login",
            "--sso",
            "--device",
            "--gateway",
            &env.url,
            "--ca-file",
            ca,
        ])
        .success();
    assert!(again.contains("Already signed in"), "{again}");
    // The session records how it was made and the provider's subject; the audit rows carry
    // the same user name.
    let db = rusqlite::Connection::open(env.path("gw/gateway.db")).unwrap();
    let (method, subject): (String, String) = db
        .query_row(
            "SELECT method, subject FROM sessions WHERE user = 'dev-ada@example.com' AND revoked_us IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (method.as_str(), subject.as_str()),
        ("sso-device", "dev-ada")
    );
    let calls = env
        .gateway_cmd(&[
            "audit",
            "--view",
            "calls",
            "--user",
            "dev-ada@example.com",
            "-o",
            "json",
            "--since",
            "1h",
        ])
        .success();
    assert!(calls.contains("\"pods\""), "{calls}");

    // The CLI's code flow on a loopback redirect (--no-browser: the URL is opened here).
    let other = client_dir(&env, "cy");
    let mut cmd = env.ztk(&[
        "login",
        "--sso",
        "--no-browser",
        "--gateway",
        &env.url,
        "--ca-file",
        ca,
    ]);
    for (k, v) in &other {
        cmd = cmd.env(k, v);
    }
    let (child, url, _) = spawn_printing(cmd);
    assert!(
        url.contains("code_challenge_method=S256")
            && url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    let page = browser(serde_json::json!({"mode": "visit", "url": url, "login": "ops-cy"}));
    assert!(
        page["text"].as_str().unwrap().contains("Signed in to ztk"),
        "{page}"
    );
    wait_ok(child);
    let mut status = env.ztk(&["status"]);
    for (k, v) in &other {
        status = status.env(k, v);
    }
    let status = status.success();
    assert!(
        status.contains("ops-cy@example.com")
            && status.contains("oidc:ops")
            && status.contains("(single sign-on)"),
        "{status}"
    );

    // The console's code flow.
    let page = browser(serde_json::json!({"mode": "console", "base": env.url, "login": "dev-eve"}));
    assert!(
        page["url"].as_str().unwrap().contains("/audit/kubectl"),
        "{page}"
    );
    assert!(
        page["text"]
            .as_str()
            .unwrap()
            .contains("dev-eve@example.com"),
        "{page}"
    );

    // Forged ID tokens: none, and one signed by another key with the right claims.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({"iss": idp.issuer, "aud": "ztk-cli", "sub": "root", "email": "root@example.com",
            "email_verified": true, "groups": ["dev"], "iat": now, "exp": now + 300});
        let none = format!("{}.{}.", enc(serde_json::json!({"alg": "none"})), enc(claims.clone()));
        let (status, body) = post_token(&env, &none).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("algorithm \\\"none\\\" is not accepted"), "{body}");
        let (status, body) = post_token(&env, "not-a-token").await;
        assert_eq!(status, 401, "{body}");
    });
    drop(idp);

    // The provider down: a clear error for the CLI; password sign-in keeps working.
    env.ztk(&["logout"]).success();
    let (code, err) = env
        .ztk(&[
            "login",
            "--sso",
            "--device",
            "--gateway",
            &env.url,
            "--ca-file",
            ca,
        ])
        .env("ZTK_TOKEN_STORE", "file")
        .failure();
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the OpenID provider"), "{err}");
    env.login();
}

async fn post_token(env: &Env, token: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = https_client(std::fs::read(env.ca_file()).unwrap());
    let body = serde_json::json!({"id_token": token, "flow": "code"}).to_string();
    let req = http::Request::post(format!("{}/ztk/v1/login/oidc", env.url))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn client_dir(env: &Env, name: &str) -> Vec<(String, String)> {
    let dir = |rel: &str| env.path(&format!("{name}/{rel}")).display().to_string();
    vec![
        ("ZTK_CONFIG_DIR".into(), dir("config")),
        ("ZTK_DATA_DIR".into(), dir("data")),
        ("ZTK_TOKEN_STORE".into(), "file".into()),
        ("HOME".into(), dir("home")),
    ]
}

fn spawn_printing(cmd: crate::harness::Cmd) -> (Child, String, Vec<String>) {
    let mut cmd = cmd.cmd;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no URL: {seen:?}"))
            .unwrap();
        seen.push(line.clone());
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http")) {
            break url.to_string();
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).count());
    (child, url, seen)
}

#[test]
fn a_provider_that_is_down_and_passwords_turned_off() {
    // Nothing listens at this issuer: the gateway starts, passwords work, SSO says why not.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let env = gateway(&dead, "");
    env.login();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(post_token(&env, "x.y.z"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot reach the OpenID provider"), "{body}");

    // password_login = false: the password sign-in is refused, with what to do instead.
    let off = gateway(&dead, "password_login = false");
    let (code, err) = off
        .ztk(&[
            "login",
            "--gateway",
            &off.url,
            "--ca-file",
            off.ca_file().to_str().unwrap(),
            "--user",
            "alice",
            "--password-stdin",
        ])
        .stdin_text(&format!("{PASSWORD}\n"))
        .failure();
    assert_ne!(code, 0);
    assert!(
        err.contains("password sign-in is turned off") && err.contains("--sso"),
        "{err}"
    );
}
