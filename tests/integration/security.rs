//! The security review's findings (issue 20), each as a regression test: what the gateway
//! authorizes is exactly what the cluster executes. Requests are made by a raw client (the
//! findings are requests kubectl never sends), against the built-in sandbox and against an
//! independent echo server that answers with the request it received, so that what is forwarded
//! is checked byte for byte, not by a second implementation written together with the first.

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::harness::{https_client, write, Env, PASSWORD};
use ztk::audit::Filter;

/// An HTTPS server on a loopback port that answers every request with JSON naming what it
/// received: method, path, raw query and headers (in order, repeated ones repeated). It needs
/// the bearer token written into its kubeconfig.
struct Echo {
    kubeconfig: std::path::PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Echo {
    fn start(dir: &std::path::Path) -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ca = ztk::tls::Ca::generate("echo upstream CA").unwrap();
        let leaf = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        let tls =
            ztk::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(ztk::serve::serve_tls(
            listener,
            tls,
            |req, _peer| async move {
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let authorized = req
                    .headers()
                    .get("authorization")
                    .is_some_and(|v| v == "Bearer echo-token");
                let answer = serde_json::json!({
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "headers": headers,
                    "authorized": authorized,
                });
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(ztk::body::full(answer.to_string()))
                    .unwrap()
            },
        ));
        use base64::Engine as _;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        let kubeconfig = dir.join("echo.kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: echo\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca_data}\nusers:\n- name: echo\n  user:\n    token: echo-token\ncontexts:\n- name: echo\n  context:\n    cluster: echo\n    user: echo\ncurrent-context: echo\n"
            ),
        );
        Echo {
            kubeconfig,
            _runtime: runtime,
        }
    }
}

/// A gateway with the sandbox, the echo server as cluster `echo` and as `echo-imp` (with
/// `impersonate = true`), and users: alice (edit everywhere), dave (may impersonate bob only,
/// and read config map `app-config` in `dev`), bob (view).
fn env_with_echo(extra: &str) -> (Env, Echo) {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(dir.path());
    let kc = echo.kubeconfig.display().to_string();
    let clusters = format!(
        "[[clusters]]\nname = \"echo\"\nkubeconfig = \"{kc}\"\n\n[[clusters]]\nname = \"echo-imp\"\nkubeconfig = \"{kc}\"\nimpersonate = true\n\n\
         [[roles]]\nname = \"impersonate-bob\"\n[[roles.rules]]\napi_groups = [\"\"]\nresources = [\"users\"]\nverbs = [\"impersonate\"]\nresource_names = [\"bob\"]\n\n\
         [[roles]]\nname = \"app-config-reader\"\n[[roles.rules]]\napi_groups = [\"\"]\nresources = [\"configmaps\"]\nverbs = [\"get\", \"list\", \"watch\"]\nresource_names = [\"app-config\"]\n\
         [[roles.rules]]\napi_groups = [\"\"]\nresources = [\"pods\"]\nverbs = [\"get\", \"list\", \"watch\"]\n"
    );
    let mut env = Env::prepare(dir, extra, &clusters);
    env.add_user("dave", &[]);
    env.add_user("bob", &[]);
    env.role(&["bind", "impersonate-bob", "--user", "dave"]);
    env.role(&[
        "bind",
        "app-config-reader",
        "--user",
        "dave",
        "--namespace",
        "dev",
    ]);
    env.role(&["bind", "view", "--user", "bob"]);
    env.serve();
    (env, echo)
}

/// A raw HTTPS client of the gateway: sends exactly the headers it is given.
struct Raw {
    rt: tokio::runtime::Runtime,
    url: String,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The values of a header the echo server received.
    fn echoed(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    }
}

impl Raw {
    fn new(env: &Env) -> Raw {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = https_client(std::fs::read(env.ca_file()).unwrap());
        Raw {
            rt,
            url: env.url.clone(),
            client,
        }
    }

    fn login(&self, user: &str) -> String {
        let body = serde_json::json!({"user": user, "password": PASSWORD}).to_string();
        let answer = self.send("POST", "/ztk/v1/login", &[], Some(body));
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["token"].as_str().unwrap().to_string()
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap()
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let req = self.request(method, path, headers, body);
        self.rt.block_on(async {
            let resp = self.client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }
        })
    }

    fn get(&self, token: &str, path: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.send("GET", path, &[("authorization", &auth)], None)
    }
}

const SELF_REVIEW: &str = "/k8s/sandbox/apis/authentication.k8s.io/v1/selfsubjectreviews";
const REVIEW_BODY: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;

/// Finding 1 (high) and 3: the impersonation the gateway authorizes is the one the cluster gets.
#[test]
fn impersonation_is_forwarded_exactly_as_authorized() {
    let (env, _echo) = env_with_echo("");
    let raw = Raw::new(&env);
    let dave = raw.login("dave");
    let auth = format!("Bearer {dave}");
    let post = |path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        raw.send("POST", path, &headers, Some(REVIEW_BODY.to_string()))
    };
    // Two users: refused, never "impersonating bob" while the cluster acts as alice.
    for cluster in ["sandbox", "echo"] {
        let path = SELF_REVIEW.replace("sandbox", cluster);
        let answer = post(
            &path,
            &[("impersonate-user", "alice"), ("impersonate-user", "bob")],
        );
        assert_eq!(answer.status, 400, "{cluster}: {}", answer.body);
        assert!(answer.body.contains("more than once"), "{}", answer.body);
    }
    // One user, allowed: the sandbox acts as bob; the echo server got exactly one header.
    let answer = post(SELF_REVIEW, &[("impersonate-user", "bob")]);
    assert!(
        answer.status == 201 || answer.status == 200,
        "{}",
        answer.body
    );
    assert_eq!(answer.json()["status"]["userInfo"]["username"], "bob");
    let answer = post(
        &SELF_REVIEW.replace("sandbox", "echo"),
        &[("impersonate-user", "bob")],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.echoed("impersonate-user"), ["bob"]);
    assert_eq!(answer.json()["authorized"], true);
    // Not allowed to impersonate alice.
    let answer = post(SELF_REVIEW, &[("impersonate-user", "alice")]);
    assert_eq!(answer.status, 403, "{}", answer.body);
    // Naming the impersonation headers in Connection does not remove what the gateway sets
    // on an impersonating cluster: the cluster still sees dave, never the gateway itself.
    let pods = "/k8s/echo-imp/api/v1/namespaces/dev/pods";
    let answer = raw.send(
        "GET",
        pods,
        &[
            ("authorization", auth.as_str()),
            ("impersonate-user", "bob"),
            ("connection", "impersonate-user, impersonate-group"),
        ],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.echoed("impersonate-user"), ["dave"]);
    // ztk's own headers and the client's token never reach the cluster.
    let answer = raw.send(
        "GET",
        &pods.replace("echo-imp", "echo"),
        &[
            ("authorization", auth.as_str()),
            ("ztk-request-id", "x"),
            ("ztk-command-id", "y"),
        ],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.echoed("ztk-request-id").is_empty());
    assert!(answer.echoed("ztk-command-id").is_empty());
    assert!(answer.echoed("impersonate-user").is_empty());
    assert_eq!(answer.echoed("authorization"), ["Bearer echo-token"]);
    // Every refusal is audited with the reason.
    let refused = env.gateway_calls(
        &Filter {
            users: vec!["dave".into()],
            statuses: vec![ztk::audit::filter::StatusMatch::Code(400)],
            ..Default::default()
        },
        2,
    );
    assert!(refused
        .iter()
        .all(|r| r.call.decision == "deny" && r.call.reason.contains("more than once")));
}

/// Findings 2, 4, 8 and 12: one parse decides authorization, the stream's registration and what
/// is forwarded; what it could read two ways is refused.
#[test]
fn queries_and_paths_are_parsed_once_and_forwarded_as_parsed() {
    let (env, _echo) = env_with_echo("");
    let raw = Raw::new(&env);
    let dave = raw.login("dave");
    let cms = "/k8s/sandbox/api/v1/namespaces/dev/configmaps";
    let get = |path: &str| raw.get(&dave, path);
    assert_eq!(
        get(&format!("{cms}?fieldSelector=metadata.name%3Dapp-config")).status,
        200
    );
    assert_eq!(
        get(&format!(
            "{cms}?fieldSelector=metadata.name%3Dprivate-config"
        ))
        .status,
        403
    );
    assert_eq!(get(cms).status, 403);
    for refused in [
        format!("{cms}?fieldSelector=metadata.name%3Dapp-config&fieldSelector=metadata.name%3Dprivate-config"),
        format!("{cms}?fieldSelector=metadata.name%3Dapp-config&fieldSelector="),
        format!("{cms}?fieldSelector=metadata.name%3Dapp-config&watch=0&watch=1"),
        "/k8s/sandbox/api/v1/namespaces/dev/pods/web/log/../exec".to_string(),
        "/k8s/sandbox/api/v1/namespaces/dev/pods/web/%2e%2e/exec".to_string(),
        "/k8s/sandbox//api/v1/watch/namespaces/dev/pods".to_string(),
        "/k8s/sandbox/api/v1/namespaces/dev/pods/web%2Fexec".to_string(),
        "/k8s/sandbox/api/v1/namespaces/dev/pods?watch=1;x=1".to_string(),
    ] {
        let answer = get(&refused);
        assert_eq!(answer.status, 400, "{refused}: {}", answer.body);
        assert_eq!(answer.json()["kind"], "Status", "{}", answer.body);
        let echo = refused.replace("/k8s/sandbox", "/k8s/echo");
        assert_eq!(get(&echo).status, 400, "{echo}");
    }
    // What the cluster receives is the canonical form of what was authorized.
    let echo = "/k8s/echo/api/v1/namespaces/dev/pods";
    for (query, forwarded) in [
        ("%77atch=1", "watch=true"),
        ("watch", "watch=true"),
        ("watch=&limit=5", "watch=true&limit=5"),
        ("watch=0", "watch=false"),
        (
            "labelSelector=app+in+(web)",
            "labelSelector=app%20in%20%28web%29",
        ),
    ] {
        let answer = get(&format!("{echo}?{query}"));
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        assert_eq!(answer.json()["query"], forwarded, "{query}");
    }
    let answer = get("/k8s/echo/api/v1/namespaces/d%65v/pods/");
    assert_eq!(answer.json()["path"], "/api/v1/namespaces/dev/pods/");
    // The audit names a watch a watch, however it was spelled.
    let watches = env.gateway_calls(
        &Filter {
            users: vec!["dave".into()],
            verbs: vec!["watch".into()],
            clusters: vec!["echo".into()],
            statuses: vec![ztk::audit::filter::StatusMatch::Code(200)],
            ..Default::default()
        },
        3,
    );
    assert!(watches.iter().all(|r| r.call.query.contains("watch=true")));
}

/// Finding 4: a watch however spelled is registered for revocation and closed by it.
#[test]
fn revocation_closes_watches_however_spelled() {
    let (env, _echo) = env_with_echo("");
    let raw = Raw::new(&env);
    let dave = raw.login("dave");
    let auth = format!("Bearer {dave}");
    let spellings = [
        "/k8s/sandbox/api/v1/namespaces/dev/pods?%77atch=1",
        "/k8s/sandbox/api/v1/namespaces/dev/pods?watch",
        "/k8s/sandbox/api/v1/namespaces/dev/pods?watch=",
        "/k8s/sandbox/api/v1/watch/namespaces/dev/pods",
    ];
    let ended = raw.rt.block_on(async {
        let mut bodies = Vec::new();
        for path in spellings {
            let req = raw.request("GET", path, &[("authorization", &auth)], None);
            let resp = raw.client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            bodies.push(resp.into_body());
        }
        // Each stream is open: the first events (ADDED) arrive and the body does not end.
        for body in bodies.iter_mut() {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
            assert!(matches!(frame, Ok(Some(Ok(_)))), "{frame:?}");
        }
        env.gateway_cmd(&["session", "revoke", "dave"]).success();
        let start = Instant::now();
        let mut ended = Vec::new();
        for mut body in bodies {
            let end = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(Ok(_)) = body.frame().await {}
            })
            .await;
            ended.push(end.is_ok());
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        ended
    });
    assert_eq!(ended, [true; 4]);
}

/// Finding 9: a client cannot put its calls under another user's command.
#[test]
fn a_command_id_is_taken_only_from_its_owner() {
    let (mut env, _echo) = env_with_echo("");
    env.login();
    env.kubectl(&["--cluster", "sandbox", "get", "pods", "-n", "dev"])
        .success();
    let alice_calls = env.gateway_calls(
        &Filter {
            users: vec!["alice".into()],
            ..Default::default()
        },
        1,
    );
    let command = alice_calls[0]
        .call
        .command_id
        .expect("alice's call has its command");
    let raw = Raw::new(&env);
    let bob = raw.login("bob");
    let auth = format!("Bearer {bob}");
    let cmd = command.to_string();
    let answer = raw.send(
        "GET",
        "/k8s/sandbox/api/v1/namespaces/dev/pods",
        &[("authorization", &auth), ("ztk-command-id", &cmd)],
        None,
    );
    assert_eq!(answer.status, 200);
    let bobs = env.gateway_calls(
        &Filter {
            users: vec!["bob".into()],
            ..Default::default()
        },
        1,
    );
    assert_eq!(bobs[0].call.command_id, None);
    assert!(
        bobs[0].call.reason.contains("another user"),
        "{:?}",
        bobs[0].call.reason
    );
    // Bob's own command ids are his.
    let own = uuid::Uuid::now_v7().to_string();
    raw.send(
        "GET",
        "/k8s/sandbox/api/v1/namespaces/dev/pods",
        &[("authorization", &auth), ("ztk-command-id", &own)],
        None,
    );
    let bobs = env.gateway_calls(
        &Filter {
            users: vec!["bob".into()],
            ..Default::default()
        },
        2,
    );
    assert!(bobs
        .iter()
        .any(|r| r.call.command_id.map(|c| c.to_string()) == Some(own.clone())));
    // After a restart the gateway still knows whose the id is (from its store).
    env.restart_gateway();
    let raw = Raw::new(&env);
    raw.send(
        "GET",
        "/k8s/sandbox/api/v1/namespaces/dev/pods",
        &[("authorization", &auth), ("ztk-command-id", &cmd)],
        None,
    );
    let bobs = env.gateway_calls(
        &Filter {
            users: vec!["bob".into()],
            ..Default::default()
        },
        3,
    );
    assert!(bobs.iter().all(|r| r.call.command_id != Some(command)));
}

/// Finding 7: failed logins are throttled per user and per address, logged and audited.
#[test]
fn failed_logins_are_throttled_and_audited() {
    let env = Env::start();
    let raw = Raw::new(&env);
    let try_login = |password: &str| {
        let body = serde_json::json!({"user": "alice", "password": password}).to_string();
        let req = raw.request("POST", "/ztk/v1/login", &[], Some(body));
        raw.rt.block_on(async {
            let resp = raw.client.request(req).await.unwrap();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (resp.status().as_u16(), retry)
        })
    };
    for _ in 0..5 {
        assert_eq!(try_login("wrong").0, 401);
    }
    // The sixth attempt, even with the right password, waits.
    let (status, retry) = try_login(PASSWORD);
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(try_login(PASSWORD).0, 200);
    let failures = env.gateway_calls(
        &Filter {
            users: vec!["alice".into()],
            verbs: vec!["login".into()],
            ..Default::default()
        },
        6,
    );
    assert_eq!(failures.iter().filter(|r| r.call.status == 401).count(), 5);
    assert_eq!(failures.iter().filter(|r| r.call.status == 429).count(), 1);
    assert!(failures.iter().all(|r| r.call.decision == "unauthenticated"
        && r.call.source_ip == "127.0.0.1"
        && r.call.reason.starts_with("login")));
    // `ztk login` says what to do.
    let (_, out) = env.login_cmd("alice").stdin_text("wrong\n").failure();
    assert!(out.contains("invalid user name or password"), "{out}");
}

/// Finding 11: logging in again replaces this client's session; `ztk status` counts them.
#[test]
fn logging_in_again_replaces_the_session() {
    let env = Env::start_with("max_sessions_per_user = 2");
    for _ in 0..4 {
        env.login();
    }
    let out = env.ztk(&["status"]).success();
    assert!(out.contains("Sessions: 1 open of 2 allowed"), "{out}");
    // Another client (its own config dir) adds one; a third is over the limit.
    let other = |dir: &str| {
        env.login_cmd("alice")
            .env("ZTK_CONFIG_DIR", env.path(dir))
            .env("ZTK_DATA_DIR", env.path(&format!("{dir}-data")))
    };
    other("second").success();
    let (_, out) = other("third").failure();
    assert!(out.contains("max_sessions_per_user"), "{out}");
    let out = env.ztk(&["status"]).success();
    assert!(out.contains("Sessions: 2 open of 2 allowed"), "{out}");
}

/// Finding 6: shipping is limited per user and minute; the client keeps what was refused.
#[test]
fn ingest_over_the_allowance_is_refused_with_retry_after_and_kept() {
    let env = Env::start_with("[limits]\ningest_records_per_minute = 2000\n");
    env.login();
    // 2,200 local records: one batch of 2,000 fits a minute's allowance, not both.
    env.ztk(&["audit", "seed", "--count", "2000", "--user", "alice"])
        .success();
    let (_, out) = env.ztk(&["audit", "push"]).failure();
    assert!(out.contains("429"), "{out}");
    // Whichever batch arrived first was stored; the rest is kept for later.
    let pending = env.local_store().pending_count("alice").unwrap();
    assert!(pending >= 200, "{pending}");
    let gateway = env.gateway_store();
    let stored = gateway.count_commands(&Filter::default()).unwrap() + gateway_client_calls(&env);
    assert!(stored == 200 || stored == 2000, "{stored}");
    assert!(stored + pending >= 2200, "{stored} + {pending}");
}

fn gateway_client_calls(env: &Env) -> u64 {
    let db = rusqlite::Connection::open(env.path("gw/audit.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM client_calls", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

/// Finding 10: headers sent too slowly, idle connections, and too many connections from one
/// address are cut.
#[test]
fn slow_idle_and_excess_connections_are_closed() {
    let env = Env::start_with(
        "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nmax_connections_per_address = 3\n",
    );
    let addr = env.url.trim_start_matches("https://").to_string();
    let roots = ztk::tls::Roots::Pem(std::fs::read(env.ca_file()).unwrap());
    let config = Arc::new(ztk::tls::client_config(&roots, None).unwrap());
    let connect = || {
        let tcp = TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn =
            rustls::ClientConnection::new(config.clone(), "127.0.0.1".try_into().unwrap()).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    };
    // Closed: the read ends (EOF or an error) before the 10 s read timeout.
    let closed_within = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => continue,
            }
        }
    };
    // Headers trickled: the first line, then nothing.
    let mut slow = connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(&mut slow) < Duration::from_secs(5));
    // Idle after a request.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut idle) < Duration::from_secs(5));
    // Three connections are served; a fourth from the same address is not.
    let mut open: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            c
        })
        .collect();
    let mut fourth = connect();
    let refused = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .and_then(|_| {
            let mut buf = [0u8; 256];
            fourth.read(&mut buf)
        });
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    open.clear();
}

/// Finding 15: a user with only a namespace binding can ask about themselves.
#[test]
fn a_namespace_binding_allows_whoami_and_can_i() {
    let env = Env::start();
    env.add_user("carol", &[]);
    env.role(&["bind", "view", "--user", "carol", "--namespace", "dev"]);
    env.login_as("carol");
    // Allowed (the sandbox answers as the gateway's own credential: no impersonation there).
    env.kubectl(&["auth", "whoami"]).success();
    let out = env
        .kubectl(&["auth", "can-i", "list", "pods", "-n", "dev"])
        .success();
    assert!(out.contains("yes"), "{out}");
    // The binding still covers nothing else cluster-wide.
    let (_, out) = env.kubectl(&["get", "pods", "-A"]).failure();
    assert!(out.contains("forbidden"), "{out}");
}

/// Finding 12 through the local proxy too: `ztk kubectl`'s proxy refuses an ambiguous request
/// before it reaches the gateway.
#[test]
fn the_local_proxy_refuses_ambiguous_requests() {
    let env = Env::start();
    env.login();
    let (_, out) = env
        .kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/dev/pods?watch=0&watch=1",
        ])
        .failure();
    assert!(out.contains("more than once"), "{out}");
    let local = env.local_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(400)],
            ..Default::default()
        },
        1,
    );
    assert!(
        local[0].call.reason.contains("ambiguous"),
        "{:?}",
        local[0].call
    );
    // Its record is well-formed: it ships with the rest.
    env.ztk(&["audit", "push"]).success();
    // Nothing of it reached the gateway.
    let at_gateway = env
        .gateway_store()
        .count_calls(&Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(400)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(at_gateway, 0);
}
