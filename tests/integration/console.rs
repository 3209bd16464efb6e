//! The web console: end to end in Debian's chromium (driven by playwright-core from
//! `tests/browser/`), and its HTTP answers without a browser.

use std::path::{Path, PathBuf};
use std::process::Command;

use http_body_util::BodyExt;

use crate::harness::{https_client, Env, PASSWORD};

/// The client environment of a second user (own config and data dirs).
fn client_env(env: &Env, name: &str) -> Vec<(String, String)> {
    let dir = |rel: &str| env.path(&format!("{name}/{rel}")).display().to_string();
    vec![
        ("ZTK_CONFIG_DIR".into(), dir("config")),
        ("ZTK_DATA_DIR".into(), dir("data")),
        ("ZTK_TOKEN_STORE".into(), "file".into()),
        ("HOME".into(), dir("home")),
        ("KUBECACHEDIR".into(), dir("home/kube-cache")),
    ]
}

fn with_env(mut cmd: crate::harness::Cmd, vars: &[(String, String)]) -> crate::harness::Cmd {
    for (k, v) in vars {
        cmd = cmd.env(k, v);
    }
    cmd
}

/// `count` GETs straight to the gateway with `user`'s session (access method "api").
fn api_calls(env: &Env, user: &str, count: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = env.gateway_api().login(user, PASSWORD, None).await.unwrap();
        let token = session.token.unwrap();
        let client = https_client(std::fs::read(env.ca_file()).unwrap());
        for i in 0..count {
            let ns = if i % 2 == 0 { "default" } else { "kube-system" };
            // Mostly lists of config maps; every tenth a get of a namespace.
            let path = if i % 10 == 0 {
                format!("api/v1/namespaces/{ns}")
            } else {
                format!("api/v1/namespaces/{ns}/configmaps")
            };
            let req = http::Request::get(format!("{}/k8s/sandbox/{path}", env.url))
                .header("authorization", format!("Bearer {token}"))
                .header("user-agent", "console-test/1.0")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
        }
    });
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn the_console_in_a_real_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: README's test command (scripts/test.sh) installs it"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing in tests/browser: README's test command (scripts/test.sh) installs it"
    );
    let env = Env::start();
    env.add_user("root", &["ztk-admins"]);
    env.role(&["bind", "cluster-admin", "--user", "root"]);
    let alice = client_env(&env, "alice");
    let root = client_env(&env, "root");
    with_env(env.login_cmd("alice"), &alice).success();
    with_env(env.login_cmd("root"), &root).success();
    for args in [
        &["kubectl", "get", "namespaces"][..],
        &["kubectl", "get", "pods", "-n", "default"],
        &["kubectl", "get", "configmaps", "-n", "default"],
    ] {
        with_env(env.ztk(args), &alice).success();
    }
    with_env(env.ztk(&["kubectl", "get", "namespaces"]), &root).success();
    // A namespace only root touched (alice's suggestions must not show it), and a 404 (a
    // client error in the insights' chart).
    with_env(env.ztk(&["kubectl", "get", "pods", "-n", "dev"]), &root).success();
    with_env(
        env.ztk(&["kubectl", "get", "configmap", "no-such", "-n", "default"]),
        &alice,
    )
    .failure();
    // More API calls than one page (100), from a client that is not kubectl.
    api_calls(&env, "alice", 130);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let as_map = |vars: &[(String, String)]| {
        serde_json::Value::Object(
            vars.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    };
    let config = serde_json::json!({
        "url": env.url,
        "ztk": crate::harness::ztk_bin(),
        "config": env.config,
        "shots": shots,
        "alice": { "user": "alice", "password": PASSWORD, "env": as_map(&alice) },
        "admin": { "user": "root", "password": PASSWORD, "env": as_map(&root), "onlyNamespace": "dev" },
    });
    let out = Command::new("node")
        .arg("console.mjs")
        .current_dir(browser_dir())
        .env("ZTK_CONSOLE_TEST", config.to_string())
        .env_remove("ZTK_GATEWAY")
        .env_remove("KUBECONFIG")
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
    eprintln!("console browser test: {result}");
    // Live within about a second (the measured times are printed above: tens to a few
    // hundred ms; the bound leaves room for a loaded 2-core machine).
    for key in ["signedOutAfterMs", "liveCommandMs", "liveCallMs"] {
        assert!(result[key].as_u64().unwrap() < 3_000, "{key}: {result}");
    }

    // The export is the whole filtered set, byte for byte what the gateway's own CLI writes.
    let exported = std::fs::read_to_string(shots.join("export.csv")).unwrap();
    let cli = env
        .gateway_cmd(&[
            "audit", "--view", "calls", "--since", "1h", "-o", "csv", "--limit", "1000000",
        ])
        .success();
    assert_eq!(exported, cli);
    // The statistics count the same calls, and the clients' own measurements of theirs.
    let stats = with_env(
        env.ztk(&[
            "audit", "stats", "--remote", "--since", "1h", "--by", "user", "-o", "json",
        ]),
        &root,
    )
    .success();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let rows = exported.lines().count() as u64 - 1;
    assert_eq!(stats["total"]["calls"].as_u64(), Some(rows), "{stats}");
    let alice_stats = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "alice")
        .unwrap();
    assert!(
        alice_stats["client_calls"].as_u64().unwrap() > 0,
        "{alice_stats}"
    );
    assert!(
        alice_stats["client_p50_us"].as_i64().unwrap() > 0,
        "{alice_stats}"
    );
    // alice, no administrator, reads only her own (the browser test revoked her session).
    with_env(env.login_cmd("alice"), &alice).success();
    let own = with_env(
        env.ztk(&[
            "audit", "stats", "--remote", "--since", "1h", "--by", "user", "-o", "json",
        ]),
        &alice,
    )
    .success();
    let own: serde_json::Value = serde_json::from_str(&own).unwrap();
    assert_eq!(own["groups"].as_array().unwrap().len(), 1, "{own}");
    let (code, err) = with_env(
        env.ztk(&["audit", "stats", "--remote", "--interval", "1h"]),
        &alice,
    )
    .failure();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since"), "{err}");
    // The same numbers as a table and as CSV, by verb, by resource, and over time.
    let table = with_env(
        env.ztk(&[
            "audit", "stats", "--remote", "--since", "1h", "--by", "verb",
        ]),
        &root,
    )
    .success();
    assert!(table.contains(", by verb:"), "{table}");
    for verb in ["get", "list"] {
        assert!(
            table
                .lines()
                .any(|l| l.split(['│', '┆']).nth(1).map(str::trim) == Some(verb)),
            "{verb}: {table}"
        );
    }
    let csv_rows = |args: &[&str]| -> Vec<Vec<String>> {
        let mut all = vec!["audit", "stats", "--remote", "--since", "1h", "-o", "csv"];
        all.extend_from_slice(args);
        let out = with_env(env.ztk(&all), &root).success();
        csv::Reader::from_reader(out.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    };
    let sum = |rows: &[Vec<String>], col: usize| -> u64 {
        rows.iter().map(|r| r[col].parse::<u64>().unwrap()).sum()
    };
    let by_resource = csv_rows(&["--by", "resource"]);
    let configmaps = by_resource.iter().find(|r| r[0] == "configmaps").unwrap();
    assert!(
        configmaps[1].parse::<u64>().unwrap() >= 117,
        "{configmaps:?}"
    );
    assert_eq!(sum(&by_resource, 1), rows, "{by_resource:?}");
    let series = csv_rows(&["--by", "user", "--interval", "1m"]);
    assert_eq!(sum(&series, 2), rows, "{series:?}");
    assert!(
        series.iter().any(|r| r[1] == "alice" && r[3] != "0"),
        "{series:?}"
    );
    assert!(
        exported.lines().count() > 101,
        "{}",
        exported.lines().count()
    );
}

/// A GET of a console path with an optional cookie: status, headers, body.
async fn get(env: &Env, path: &str, cookie: Option<&str>) -> (u16, http::HeaderMap, String) {
    let client = https_client(std::fs::read(env.ca_file()).unwrap());
    let mut req = http::Request::get(format!("{}{path}", env.url));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = client
        .request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[test]
fn console_answers_bad_and_unsigned_requests_clearly() {
    let env = Env::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Without a session: pages go to the sign-in, the data endpoints answer 401.
        let (status, headers, _) = get(&env, "/audit/kubectl?view=calls", None).await;
        assert_eq!(status, 303);
        assert_eq!(
            headers["location"],
            "/signin?next=%2Faudit%2Fkubectl%3Fview%3Dcalls"
        );
        for path in [
            "/console/live?view=calls&after_seq=0",
            "/audit/kubectl/export.csv?view=calls",
        ] {
            let (status, _, body) = get(&env, path, None).await;
            assert_eq!(status, 401, "{path}");
            assert!(body.contains("\"kind\":\"Status\""), "{body}");
        }
        let (status, headers, body) = get(&env, "/signin", None).await;
        assert_eq!(status, 200);
        assert!(body.contains("Username") && body.contains("Sign in"));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!body.contains("<script>"), "no inline script");
        // A forged session cookie sees nothing.
        let (status, _, _) = get(
            &env,
            "/audit/kubectl/export.csv",
            Some("__Host-ztk=ztk_forged"),
        )
        .await;
        assert_eq!(status, 401);

        // With a session (the API's login makes a gateway session like the console's).
        let session = env
            .gateway_api()
            .login("alice", PASSWORD, None)
            .await
            .unwrap();
        let cookie = format!("__Host-ztk={}", session.token.unwrap());
        let (status, _, body) = get(
            &env,
            "/console/live?view=calls&verb=x&min-duration=fast&after_seq=0",
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 400);
        assert!(body.contains("invalid duration"), "{body}");
        let (status, _, body) = get(&env, "/console/live?view=calls", Some(&cookie)).await;
        assert_eq!(status, 400);
        assert!(body.contains("after_seq"), "{body}");
        let (status, _, body) = get(
            &env,
            "/audit/kubectl/export.csv?view=calls&user=bob",
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("\"reason\":\"Forbidden\""), "{body}");
        let (status, headers, body) = get(
            &env,
            "/audit/kubectl/export.csv?view=commands",
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        assert!(body.starts_with("started,"), "{body}");
        let (status, _, body) = get(&env, "/audit/kubectl?after=garbage", Some(&cookie)).await;
        assert_eq!(status, 400);
        assert!(body.contains("invalid page position"), "{body}");
        let (status, _, _) = get(&env, "/no/such/page", Some(&cookie)).await;
        assert_eq!(status, 404);
    });
}

/// Signs in through the console's form as a browser does: the form (its token and cookie),
/// then the POST from this origin. Returns the status, the session cookie if one was set, and
/// the page.
async fn console_signin(env: &Env, user: &str, password: &str) -> (u16, Option<String>, String) {
    let (status, headers, body) = get(env, "/signin", None).await;
    assert_eq!(status, 200);
    let pre = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-ztk-pre="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let form = format!(
        "csrf={csrf}&next=%2Faudit%2Fkubectl&username={user}&password={}",
        password.replace(' ', "+")
    );
    let client = https_client(std::fs::read(env.ca_file()).unwrap());
    let req = http::Request::post(format!("{}/signin", env.url))
        .header("origin", &env.url)
        .header("cookie", pre)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let session = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-ztk=") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string());
    let retry = parts
        .headers
        .get("retry-after")
        .map(|v| format!("retry-after: {}\n", v.to_str().unwrap()))
        .unwrap_or_default();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        session,
        format!("{retry}{}", String::from_utf8_lossy(&bytes)),
    )
}

/// The console's sign-in is `ztk login`'s: one throttle of failed passwords (per user name,
/// counted together whichever way they came), one `max_sessions_per_user`, one `session_ttl`.
#[test]
fn the_console_sign_in_follows_the_login_rules() {
    let env = Env::start_with("max_sessions_per_user = 2\nsession_ttl = \"4s\"");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..5 {
            let (status, session, body) = console_signin(&env, "alice", "wrong").await;
            assert_eq!(status, 401, "{body}");
            assert!(session.is_none());
            assert!(body.contains("invalid user name or password"), "{body}");
        }
        // After five, each failure waits, doubling: one more after a second makes it two.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        assert_eq!(console_signin(&env, "alice", "wrong").await.0, 401);
        let (status, session, body) = console_signin(&env, "alice", PASSWORD).await;
        assert_eq!(status, 429, "{body}");
        assert!(session.is_none());
        assert!(
            body.starts_with("retry-after: ") && body.contains("too many failed logins"),
            "{body}"
        );
        // The same count holds `ztk login` (the gateway's login API).
        let err = env
            .gateway_api()
            .login("alice", PASSWORD, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("too many failed logins"), "{err}");
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;

        // Two sessions allowed: one of `ztk login`, one of the console; a third is refused.
        env.gateway_api()
            .login("alice", PASSWORD, None)
            .await
            .unwrap();
        let (status, session, body) = console_signin(&env, "alice", PASSWORD).await;
        assert_eq!(status, 303, "{body}");
        let session = session.unwrap();
        let (status, _, body) = get(&env, "/audit/kubectl", Some(&session)).await;
        assert_eq!(status, 200, "{body}");
        let (status, none, body) = console_signin(&env, "alice", PASSWORD).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            none.is_none() && body.contains("max_sessions_per_user"),
            "{body}"
        );

        // session_ttl: the console's session ends with it.
        tokio::time::sleep(std::time::Duration::from_millis(4_200)).await;
        let (status, headers, _) = get(&env, "/audit/kubectl", Some(&session)).await;
        assert_eq!(status, 303);
        assert!(
            headers["location"].to_str().unwrap().starts_with("/signin"),
            "{headers:?}"
        );
        let (status, _, _) =
            get(&env, "/console/live?view=calls&after_seq=0", Some(&session)).await;
        assert_eq!(status, 401);
    });
}
