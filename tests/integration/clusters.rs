//! Real-world kubeconfigs (issue 21): clusters the gateway reaches as kubectl does — a server
//! certificate that is its own self-signed CA, `tls-server-name`, `tokenFile`, `proxy-url` (HTTP
//! CONNECT and SOCKS5), `insecure-skip-tls-verify` allowed by the gateway, the pod's service
//! account, exec credential plugins (cached, refreshed once on a 401 and at expiry, never two at
//! once), and clusters that cannot be reached or whose plugin fails (503, the gateway serves on).
//!
//! The upstreams are `ztk sandbox serve` processes, each with its own TLS and token, and each
//! kubeconfig is first used by the real kubectl directly: what kubectl accepts, the gateway must.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{write, ztk_bin, Env, KUBECTL_127};
use ztk::audit::Filter;
use ztk::kubeconfig::Kubeconfig;

/// A `ztk sandbox serve` process with its kubeconfig.
struct Upstream {
    child: Child,
    kubeconfig: PathBuf,
    port: u16,
    token: String,
    ca_pem: String,
}

impl Upstream {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Upstream {
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        let mut child = Command::new(ztk_bin())
            .args([
                "sandbox",
                "serve",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("sandbox exited").unwrap();
            if let Some(url) = line.strip_prefix("ztk sandbox: listening on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let kc = Kubeconfig::load(&kubeconfig).unwrap();
        let token = kc.users[0].user.token.clone().unwrap_or_default();
        let ca_pem = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                kc.clusters[0]
                    .cluster
                    .certificate_authority_data
                    .as_ref()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        Upstream {
            child,
            kubeconfig,
            port,
            token,
            ca_pem,
        }
    }

    /// A copy of the kubeconfig, changed by `edit`, written to `path`.
    fn variant(&self, path: &Path, edit: impl FnOnce(&mut Kubeconfig)) -> PathBuf {
        let mut kc = Kubeconfig::load(&self.kubeconfig).unwrap();
        edit(&mut kc);
        write(path, &serde_yaml_ng::to_string(&kc).unwrap());
        path.to_path_buf()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A forward proxy on a loopback port that speaks HTTP CONNECT and SOCKS5 (no authentication),
/// counting the tunnels of each kind; it resolves `sandbox.internal` to 127.0.0.1.
pub(crate) struct ForwardProxy {
    pub(crate) port: u16,
    pub(crate) connect: Arc<AtomicUsize>,
    pub(crate) socks: Arc<AtomicUsize>,
    /// The `Proxy-Authorization` of each CONNECT (empty when none was sent).
    pub(crate) auth: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub(crate) fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connect, socks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let auth: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (c, s, a) = (connect.clone(), socks.clone(), auth.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, s, a) = (c.clone(), s.clone(), a.clone());
                std::thread::spawn(move || {
                    let _ = Self::tunnel(stream, &c, &s, &a);
                });
            }
        });
        ForwardProxy {
            port,
            connect,
            socks,
            auth,
        }
    }

    fn tunnel(
        mut client: TcpStream,
        connect: &AtomicUsize,
        socks: &AtomicUsize,
        auth: &std::sync::Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut first = [0u8; 1];
        client.read_exact(&mut first)?;
        let target = if first[0] == 5 {
            let mut n = [0u8; 1];
            client.read_exact(&mut n)?;
            let mut methods = vec![0u8; n[0] as usize];
            client.read_exact(&mut methods)?;
            assert!(
                methods.contains(&0),
                "no 'no authentication' method offered"
            );
            client.write_all(&[5, 0])?;
            let mut head = [0u8; 4];
            client.read_exact(&mut head)?;
            assert_eq!(&head[..3], &[5, 1, 0], "not a SOCKS5 CONNECT");
            let host = match head[3] {
                1 => {
                    let mut ip = [0u8; 4];
                    client.read_exact(&mut ip)?;
                    std::net::Ipv4Addr::from(ip).to_string()
                }
                3 => {
                    let mut len = [0u8; 1];
                    client.read_exact(&mut len)?;
                    let mut name = vec![0u8; len[0] as usize];
                    client.read_exact(&mut name)?;
                    String::from_utf8(name).unwrap()
                }
                other => panic!("address type {other}"),
            };
            let mut port = [0u8; 2];
            client.read_exact(&mut port)?;
            client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
            socks.fetch_add(1, Ordering::SeqCst);
            format!("{host}:{}", u16::from_be_bytes(port))
        } else {
            let mut head = vec![first[0]];
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                client.read_exact(&mut byte)?;
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let target = head
                .strip_prefix("CONNECT ")
                .and_then(|rest| rest.split(' ').next())
                .expect("not a CONNECT request")
                .to_string();
            let presented = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default();
            auth.lock().unwrap().push(presented);
            connect.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
            target
        };
        // As a corporate proxy resolves internal names: sandbox.internal is this machine.
        let target = match target.strip_prefix("sandbox.internal:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => target,
        };
        let upstream = TcpStream::connect(target)?;
        let (mut a, mut b) = (client.try_clone()?, upstream.try_clone()?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut a, &mut b);
            let _ = b.shutdown(std::net::Shutdown::Write);
        });
        let (mut a, mut b) = (upstream, client);
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
        Ok(())
    }
}

fn cluster_toml(name: &str, kubeconfig: &Path, extra: &str) -> String {
    format!(
        "[[clusters]]\nname = \"{name}\"\nkubeconfig = \"{}\"\n{extra}\n",
        kubeconfig.display()
    )
}

/// `ztk gateway clusters status -o json`, by cluster name.
fn status(env: &Env) -> (Value, String) {
    let json = env
        .gateway_cmd(&["clusters", "status", "-o", "json"])
        .success();
    let value: Value = serde_json::from_str(&json).unwrap();
    let table = env.gateway_cmd(&["clusters", "status"]).success();
    (value, format!("{json}\n{table}"))
}

fn cluster<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {status}"))
}

/// Waits until the running gateway's status says `check` of cluster `name`.
fn wait_status(env: &Env, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (value, _) = status(env);
        if check(cluster(&value, name)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "status of {name} never matched: {value:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn self_signed_tls_server_name_token_files_proxies_insecure_and_in_cluster_work_through_both_hops()
{
    let dir = tempfile::tempdir().unwrap();
    let own_ca = Upstream::start(dir.path(), "selfsigned", &["--self-signed"]);
    let named = Upstream::start(dir.path(), "named", &["--tls-name", "sandbox.internal"]);
    let plain = Upstream::start(dir.path(), "plain", &[]);
    let proxy = ForwardProxy::start();

    // tls-server-name, and a token file that holds a wrong token at first.
    let token_file = dir.path().join("named.token");
    write(&token_file, "not-the-token\n");
    let named_kc = named.variant(&dir.path().join("named-file.kubeconfig"), |kc| {
        kc.clusters[0].cluster.tls_server_name = Some("sandbox.internal".into());
        kc.users[0].user.token = None;
        kc.users[0].user.token_file = Some(token_file.display().to_string());
    });
    let via_connect = plain.variant(&dir.path().join("connect.kubeconfig"), |kc| {
        // With a user and password, sent as Proxy-Authorization (percent-decoded first).
        kc.clusters[0].cluster.proxy_url =
            Some(format!("http://ztk:s3cr%40t@127.0.0.1:{}", proxy.port));
    });
    let via_socks = plain.variant(&dir.path().join("socks.kubeconfig"), |kc| {
        kc.clusters[0].cluster.proxy_url = Some(format!("socks5://127.0.0.1:{}", proxy.port));
    });
    // A server only the proxy can resolve, reached through the environment's HTTPS_PROXY
    // (with a password), as kubectl does when the kubeconfig names no proxy.
    let via_env = named.variant(&dir.path().join("env-proxy.kubeconfig"), |kc| {
        kc.clusters[0].cluster.server = format!("https://sandbox.internal:{}", named.port);
    });
    let env_proxy = format!("ztk:s3cr%40t@127.0.0.1:{}", proxy.port);
    let insecure = own_ca.variant(&dir.path().join("insecure.kubeconfig"), |kc| {
        kc.clusters[0].cluster.certificate_authority_data = None;
        kc.clusters[0].cluster.insecure_skip_tls_verify = true;
    });

    // The real kubectl takes each of these as it is.
    for (kc, what) in [
        (&own_ca.kubeconfig, "self-signed"),
        (&via_connect, "CONNECT proxy"),
        (&via_socks, "SOCKS5 proxy"),
        (&insecure, "insecure"),
    ] {
        let out = Command::new("kubectl")
            .args(["get", "ns", "--kubeconfig", kc.to_str().unwrap()])
            .env("KUBECACHEDIR", dir.path().join("kubectl-cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl alone, {what}: {out:?}");
    }
    let before = proxy.connect.load(Ordering::SeqCst);
    let out = Command::new("kubectl")
        .args(["get", "ns", "--kubeconfig", via_env.to_str().unwrap()])
        .env("KUBECACHEDIR", dir.path().join("kubectl-cache"))
        .env("HTTPS_PROXY", &env_proxy)
        .env("NO_PROXY", "example.com,10.0.0.0/8")
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl alone, HTTPS_PROXY: {out:?}");
    assert!(proxy.connect.load(Ordering::SeqCst) > before);
    let kubectl_tunnels = (
        proxy.connect.load(Ordering::SeqCst),
        proxy.socks.load(Ordering::SeqCst),
    );
    assert!(
        kubectl_tunnels.0 > 0 && kubectl_tunnels.1 > 0,
        "{kubectl_tunnels:?}"
    );

    // The pod's service account: the self-signed upstream's CA and token.
    let sa = dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    write(&sa.join("ca.crt"), &own_ca.ca_pem);
    write(&sa.join("token"), &own_ca.token);

    let mut clusters = cluster_toml("selfsigned", &own_ca.kubeconfig, "");
    clusters += &cluster_toml("named", &named_kc, "");
    clusters += &cluster_toml("viaconnect", &via_connect, "");
    clusters += &cluster_toml("viasocks", &via_socks, "");
    clusters += &cluster_toml("insecure", &insecure, "allow_insecure = true");
    clusters += &cluster_toml("viaenv", &via_env, "");
    clusters += "[[clusters]]\nname = \"incluster\"\nincluster = true\n";

    // Without allow_insecure the gateway refuses to start, naming the setting.
    let refused_dir = tempfile::tempdir().unwrap();
    let refused = Env::prepare(refused_dir, "", &cluster_toml("insecure", &insecure, ""));
    let (code, err) = refused
        .ztk(&[
            "gateway",
            "serve",
            "--config",
            refused.config.to_str().unwrap(),
        ])
        .failure();
    assert!(code != 0 && err.contains("allow_insecure = true"), "{err}");
    // Gone before the next environment: each holds the machine's lock for reading, and one
    // taken while another is held would wait behind a test waiting to run alone (ha.rs).
    drop(refused);

    let mut env = Env::prepare(dir, "", &clusters);
    env.serve_with(&[
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT", own_ca.port.to_string()),
        ("ZTK_SERVICEACCOUNT_DIR", sa.display().to_string()),
        // Used by viaenv only: the other clusters are on loopback or have a proxy-url.
        ("HTTPS_PROXY", env_proxy.clone()),
        ("NO_PROXY", "example.com,10.0.0.0/8".into()),
    ]);
    env.setup_plain();
    env.wait_log("WARNING: cluster insecure is reached WITHOUT TLS verification");

    for name in [
        "selfsigned",
        "viaconnect",
        "viasocks",
        "viaenv",
        "insecure",
        "incluster",
    ] {
        // First hop: `ztk kubectl`'s own proxy; then plain kubectl through the persistent one.
        let out = env
            .kubectl(&["--cluster", name, "get", "deploy", "-n", "prod"])
            .success();
        assert!(out.contains("web"), "{name}: {out}");
        let context = format!("ztk-{name}");
        let out = env
            .plain("kubectl", &["--context", &context, "get", "ns"])
            .success();
        assert!(out.contains("prod"), "{name}: {out}");
    }
    let out = env
        .plain(
            KUBECTL_127,
            &["--context", "ztk-selfsigned", "get", "cm", "-n", "default"],
        )
        .success();
    assert!(out.contains("NAME") || out.is_empty(), "{out}");
    assert!(proxy.connect.load(Ordering::SeqCst) > kubectl_tunnels.0);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ztk:s3cr@t")
    );
    let auth = proxy.auth.lock().unwrap().clone();
    assert_eq!(auth.len(), proxy.connect.load(Ordering::SeqCst));
    assert!(auth.iter().all(|a| *a == basic), "{auth:?} vs {basic}");
    assert!(proxy.socks.load(Ordering::SeqCst) > kubectl_tunnels.1);

    // The token file's wrong token is refused by the cluster; once the file holds the right
    // one, the gateway uses it within a second or two, without a restart.
    let (_, err) = env.kubectl(&["--cluster", "named", "get", "ns"]).failure();
    // The cluster's 401 is about the gateway's credential, not the user's session: kubectl must
    // not be told to log in.
    assert!(
        err.contains("cluster named") && err.contains("refused the gateway's credential"),
        "{err}"
    );
    write(&token_file, &format!("{}\n", named.token));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env.kubectl(&["--cluster", "named", "get", "ns"]).output();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new token was never used: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // tls-server-name through the second hop too (plain kubectl, the persistent proxy).
    let out = env
        .plain("kubectl", &["--context", "ztk-named", "get", "ns"])
        .success();
    assert!(out.contains("prod"), "{out}");

    // The pod's service-account token rotates: the gateway reads the new one from the file.
    let until_works = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = env
                .kubectl(&["--cluster", "incluster", "get", "ns"])
                .output();
            if out.status.success() == want {
                return;
            }
            assert!(Instant::now() < deadline, "incluster never {want}: {out:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    write(&sa.join("token"), "rotated-but-not-yet-valid\n");
    until_works(false);
    write(&sa.join("token"), &format!("{}\n", own_ca.token));
    until_works(true);

    let rows = env.gateway_calls(
        &Filter {
            clusters: vec!["incluster".into()],
            ..Default::default()
        },
        2,
    );
    assert!(rows.iter().any(|r| r.call.status == 200), "{rows:?}");

    // The gateway writes its status at most once a second.
    wait_status(&env, "named", |c| c["last_success"].is_string());
    let (value, text) = status(&env);
    assert_eq!(value["running"], true, "{value:#}");
    let insecure = cluster(&value, "insecure");
    assert_eq!(insecure["insecure"], true);
    assert!(text.contains("TLS NOT VERIFIED"), "{text}");
    assert_eq!(cluster(&value, "selfsigned")["insecure"], false);
    assert_eq!(
        cluster(&value, "viasocks")["proxy"],
        format!("socks5://127.0.0.1:{}", proxy.port)
    );
    assert_eq!(
        cluster(&value, "viaenv")["proxy"],
        format!("http://127.0.0.1:{} (from HTTPS_PROXY)", proxy.port)
    );
    assert_eq!(
        cluster(&value, "named")["tls_server_name"],
        "sandbox.internal"
    );
    let incluster = cluster(&value, "incluster");
    assert_eq!(incluster["source"], "in-cluster service account");
    assert!(
        incluster["credential"]["kind"]
            .as_str()
            .unwrap()
            .starts_with("token file"),
        "{incluster}"
    );
    for name in [
        "selfsigned",
        "viaconnect",
        "viasocks",
        "viaenv",
        "insecure",
        "incluster",
        "named",
    ] {
        assert!(
            cluster(&value, name)["last_success"].is_string(),
            "{name}: {value:#}"
        );
    }
    // Credentials are named, never shown.
    for secret in [&own_ca.token, &named.token, &plain.token] {
        assert!(!text.contains(secret.as_str()), "a token is in the status");
    }
}

/// An exec plugin that counts its runs, notes any run that overlaps another, keeps what
/// KUBERNETES_EXEC_INFO said, answers a wrong token on its first run, and the right one (from
/// `token` beside it) after that, valid for LIFETIME seconds.
const PLUGIN: &str = r#"#!/bin/bash
d="$(dirname "$0")"
if ! mkdir "$d/running" 2>/dev/null; then echo overlap >> "$d/overlaps"; fi
n=$(( $(cat "$d/runs" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/runs"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$d/exec-info"
sleep 0.5
token="$(cat "$d/token")"
[ "$n" = 1 ] && token=wrong-token
expiry="$(date -u -d "+${LIFETIME} seconds" +%Y-%m-%dT%H:%M:%SZ)"
rmdir "$d/running"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}\n' "$token" "$expiry"
"#;

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn exec_plugins_run_once_per_credential_and_failing_or_unreachable_clusters_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "up", &[]);
    let plugin_dir = dir.path().join("plugin");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let plugin = plugin_dir.join("get-token");
    write(&plugin, PLUGIN);
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    write(&plugin_dir.join("token"), &upstream.token);
    let exec = |config: ztk::kubeconfig::ExecConfig| {
        move |kc: &mut Kubeconfig| {
            kc.users[0].user.token = None;
            kc.users[0].user.exec = Some(config);
        }
    };
    let lifetime = 8;
    let exec_kc = upstream.variant(
        &dir.path().join("exec.kubeconfig"),
        exec(ztk::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1".into(),
            // Relative to the kubeconfig's directory, as kubectl resolves it.
            command: "./plugin/get-token".into(),
            env: vec![ztk::kubeconfig::ExecEnv {
                name: "LIFETIME".into(),
                value: lifetime.to_string(),
            }],
            provide_cluster_info: true,
            interactive_mode: Some("Never".into()),
            ..Default::default()
        }),
    );
    let broken_plugin = dir.path().join("broken-plugin");
    write(
        &broken_plugin,
        "#!/bin/sh\necho 'error: the SSO session has expired; run aws sso login' >&2\nexit 3\n",
    );
    std::fs::set_permissions(
        &broken_plugin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let broken_kc = upstream.variant(
        &dir.path().join("broken.kubeconfig"),
        exec(ztk::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1beta1".into(),
            command: broken_plugin.display().to_string(),
            ..Default::default()
        }),
    );
    let garbled_plugin = dir.path().join("garbled-plugin");
    write(&garbled_plugin, "#!/bin/sh\necho 'Enter password:'\n");
    std::fs::set_permissions(
        &garbled_plugin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let garbled_kc = upstream.variant(
        &dir.path().join("garbled.kubeconfig"),
        exec(ztk::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1".into(),
            command: garbled_plugin.display().to_string(),
            ..Default::default()
        }),
    );
    let missing_kc = upstream.variant(
        &dir.path().join("missing.kubeconfig"),
        exec(ztk::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1beta1".into(),
            command: "ztk-test-no-such-plugin".into(),
            install_hint: Some("install it with: apt install no-such-plugin".into()),
            ..Default::default()
        }),
    );
    // A plugin that answers a client certificate (v1beta1), from an upstream that takes them.
    let cert_up = Upstream::start(dir.path(), "certup", &["--client-cert"]);
    let cert_user = Kubeconfig::load(&cert_up.kubeconfig).unwrap().users[0]
        .user
        .clone();
    let pem = |b64: Option<String>| {
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let cert_dir = dir.path().join("certplugin");
    std::fs::create_dir_all(&cert_dir).unwrap();
    write(
        &cert_dir.join("credential.json"),
        &serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "kind": "ExecCredential",
            "status": {
                "clientCertificateData": pem(cert_user.client_certificate_data),
                "clientKeyData": pem(cert_user.client_key_data),
            }
        })
        .to_string(),
    );
    let cert_plugin = cert_dir.join("get-cert");
    write(
        &cert_plugin,
        "#!/bin/sh
d=\"$(dirname \"$0\")\"
echo run >> \"$d/runs\"
cat \"$d/credential.json\"
",
    );
    std::fs::set_permissions(
        &cert_plugin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exec_cert_kc = cert_up.variant(
        &dir.path().join("execcert.kubeconfig"),
        exec(ztk::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1beta1".into(),
            command: cert_plugin.display().to_string(),
            ..Default::default()
        }),
    );
    let exec_cert_kc = {
        let mut kc = Kubeconfig::load(&exec_cert_kc).unwrap();
        kc.users[0].user.client_certificate_data = None;
        kc.users[0].user.client_key_data = None;
        write(&exec_cert_kc, &serde_yaml_ng::to_string(&kc).unwrap());
        exec_cert_kc
    };
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down_kc = upstream.variant(&dir.path().join("down.kubeconfig"), |kc| {
        kc.clusters[0].cluster.server = format!("https://127.0.0.1:{closed}");
    });
    let mut clusters = cluster_toml("exec", &exec_kc, "");
    clusters += &cluster_toml("broken", &broken_kc, "");
    clusters += &cluster_toml("missing", &missing_kc, "");
    clusters += &cluster_toml("down", &down_kc, "");
    clusters += &cluster_toml("garbled", &garbled_kc, "");
    clusters += &cluster_toml("execcert", &exec_cert_kc, "");
    let env = Env::start_in(dir, "", &clusters);

    // The probe at start ran the plugin once and the cluster refused its token.
    wait_status(&env, "exec", |c| {
        c["last_error"].as_str().is_some_and(|e| e.contains("401"))
    });
    assert_eq!(runs(&plugin_dir), 1);
    env.setup_plain();
    for _ in 0..3 {
        let out = env
            .plain("kubectl", &["--context", "ztk-exec", "get", "ns"])
            .success();
        assert!(out.contains("prod"), "{out}");
    }
    env.plain(
        KUBECTL_127,
        &["--context", "ztk-exec", "get", "deploy", "-A"],
    )
    .success();
    env.kubectl(&["--cluster", "exec", "get", "pods", "-n", "prod"])
        .success();
    // Refreshed once after the 401, then never per request.
    assert_eq!(runs(&plugin_dir), 2);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(plugin_dir.join("exec-info")).unwrap())
            .unwrap();
    assert_eq!(info["spec"]["interactive"], false, "{info}");
    assert_eq!(
        info["spec"]["cluster"]["server"],
        format!("https://127.0.0.1:{}", upstream.port)
    );

    // At expiry, six kubectl processes at once: one run, not six, and never two at once.
    std::thread::sleep(Duration::from_secs(lifetime + 1));
    let children: Vec<_> = (0..6)
        .map(|_| {
            env.plain("kubectl", &["--context", "ztk-exec", "get", "ns"])
                .cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(runs(&plugin_dir), 3);
    assert!(
        !plugin_dir.join("overlaps").exists(),
        "two plugin runs overlapped"
    );

    // Failing credentials and an unreachable cluster: 503 naming the cluster, the gateway
    // serves the others.
    let (_, err) = env
        .kubectl(&["--cluster", "broken", "get", "--raw", "/api"])
        .failure();
    assert!(
        err.contains("cluster broken") && err.contains("exited with status 3"),
        "{err}"
    );
    let (_, err) = env
        .kubectl(&["--cluster", "missing", "get", "--raw", "/api"])
        .failure();
    assert!(
        err.contains("was not found") && err.contains("apt install no-such-plugin"),
        "{err}"
    );
    let (_, err) = env
        .kubectl(&["--cluster", "garbled", "get", "--raw", "/api"])
        .failure();
    assert!(
        err.contains("cluster garbled") && err.contains("printed no valid ExecCredential"),
        "{err}"
    );
    // The gateway said at start which clusters it cannot reach.
    env.wait_log("cluster down is not reachable");
    let (_, err) = env
        .kubectl(&["--cluster", "down", "get", "--raw", "/api"])
        .failure();
    assert!(
        err.contains("ServiceUnavailable") && err.contains("cluster down"),
        "{err}"
    );
    let rows = env.gateway_calls(
        &Filter {
            clusters: vec!["down".into()],
            ..Default::default()
        },
        1,
    );
    assert!(rows.iter().all(|r| r.call.status == 503), "{rows:?}");
    env.kubectl(&["--cluster", "exec", "get", "ns"]).success();

    // The plugin's client certificate: used for every call, the plugin run once (at start).
    for _ in 0..2 {
        let out = env
            .kubectl(&["--cluster", "execcert", "get", "deploy", "-n", "prod"])
            .success();
        assert!(out.contains("web"), "{out}");
    }
    let cert_runs = std::fs::read_to_string(cert_dir.join("runs")).unwrap();
    assert_eq!(cert_runs.lines().count(), 1, "{cert_runs}");

    wait_status(&env, "exec", |c| c["credential"]["refreshes"] == 3);
    wait_status(&env, "down", |c| c["last_error"].is_string());
    let (value, text) = status(&env);
    let exec = cluster(&value, "exec");
    assert_eq!(
        exec["credential"]["kind"],
        "exec plugin ./plugin/get-token (client.authentication.k8s.io/v1)"
    );
    assert!(exec["credential"]["expires"].is_string(), "{exec}");
    assert_eq!(exec["credential"]["refreshes"], 3);
    assert!(exec["last_success"].is_string(), "{exec}");
    let broken = cluster(&value, "broken");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("the SSO session has expired"),
        "{broken}"
    );
    let down = cluster(&value, "down");
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{down}"
    );
    assert!(text.contains("failing"), "{text}");
    assert!(
        !text.contains(&upstream.token),
        "the token is in the status"
    );
}
