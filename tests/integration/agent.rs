//! `ztk agent` across real network boundaries: the cluster (`ztk sandbox serve`, its own TLS and
//! token) runs in a network namespace of the test's own that only the agent's namespace can
//! reach; the gateway runs in the test's namespace and cannot reach the cluster. Everything the
//! real kubectl does crosses the agent's tunnel; the agent is `kill -9`ed mid-watch, the
//! gateway restarted, the agent revoked, and its used enrollment token tried again.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{ztk_bin, Env};
use ztk::audit::Filter;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {} (the agent tests make network namespaces: they need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces: the cluster's (`c`) and the agent's (`a`); the agent's is linked to the
/// cluster's and to the test's own; the cluster's only to the agent's.
pub struct Net {
    tag: String,
    /// The agent's side of the cluster link, the cluster, the test's side, the agent's side.
    pub cluster_ip: String,
    pub gateway_ip: String,
    pub agent_ip: String,
}

impl Net {
    pub fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:06x}", (pid.wrapping_mul(64).wrapping_add(n)) & 0xff_ffff);
        let (b, c) = (200 + (n % 50), pid % 250);
        let net = Net {
            cluster_ip: format!("10.{b}.{c}.2"),
            gateway_ip: format!("10.{b}.{c}.5"),
            agent_ip: format!("10.{b}.{c}.6"),
            tag,
        };
        let (a, cl) = (net.ns("a"), net.ns("c"));
        let t = &net.tag;
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &cl]);
        // agent <-> cluster
        ip(&[
            "link",
            "add",
            &format!("za{t}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("zc{t}"),
        ]);
        ip(&["link", "set", &format!("za{t}"), "netns", &a]);
        ip(&["link", "set", &format!("zc{t}"), "netns", &cl]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("10.{b}.{c}.1/30"),
            "dev",
            &format!("za{t}"),
        ]);
        ip(&[
            "-n",
            &cl,
            "addr",
            "add",
            &format!("{}/30", net.cluster_ip),
            "dev",
            &format!("zc{t}"),
        ]);
        // the test's namespace <-> agent
        ip(&[
            "link",
            "add",
            &format!("zg{t}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("zb{t}"),
        ]);
        ip(&["link", "set", &format!("zb{t}"), "netns", &a]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.gateway_ip),
            "dev",
            &format!("zg{t}"),
        ]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("{}/30", net.agent_ip),
            "dev",
            &format!("zb{t}"),
        ]);
        for (ns, dev) in [
            (&a, format!("za{t}")),
            (&a, format!("zb{t}")),
            (&cl, format!("zc{t}")),
        ] {
            ip(&["-n", ns, "link", "set", &dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["link", "set", &format!("zg{t}"), "up"]);
        net
    }

    fn ns(&self, which: &str) -> String {
        format!("ztk-{which}-{}", self.tag)
    }

    /// `ip netns exec NS ztk ARGS` (the process is ztk itself: `ip` execs it).
    pub fn ztk_in(&self, which: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(which), ztk_bin()])
            .args(args)
            .env_remove("ZTK_DATABASE_URL")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for which in ["a", "c"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(which)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("zg{}", self.tag)])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sandbox serving in the cluster's namespace; its address.
fn cluster(net: &Net, kubeconfig: &Path) -> (Proc, SocketAddr) {
    let mut child = net
        .ztk_in(
            "c",
            &[
                "sandbox",
                "serve",
                "--listen",
                &format!("{}:0", net.cluster_ip),
                "--tls-name",
                &net.cluster_ip,
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sandbox exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("ztk sandbox: listening on https://") {
            break url.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (Proc(child), addr)
}

/// `ztk agent` in the agent's namespace; its stderr lines arrive on the receiver.
pub fn agent(
    net: &Net,
    gateway_urls: &[&str],
    ca: &Path,
    kubeconfig: &Path,
    token: Option<&Path>,
    data: &Path,
) -> (Proc, mpsc::Receiver<String>) {
    let mut args = vec!["agent".to_string()];
    for url in gateway_urls {
        args.extend(["--gateway".to_string(), url.to_string()]);
    }
    args.extend(
        [
            "--ca-file",
            ca.to_str().unwrap(),
            "--cluster",
            "edge",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--keepalive",
            "1s",
        ]
        .map(String::from),
    );
    if let Some(token) = token {
        args.extend(["--token-file".to_string(), token.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = net
        .ztk_in("a", &args)
        .env("ZTK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            let _ = tx.send(line);
        }
    });
    (Proc(child), rx)
}

/// Waits for `agent` to exit, at most `within`; its exit status.
pub fn exit_within(agent: &mut Proc, within: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "{what} still runs after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent status of cluster `edge` in `ztk gateway clusters status -o json`.
pub fn edge_status(config: &Path) -> serde_json::Value {
    let out = Command::new(ztk_bin())
        .args(["gateway", "clusters", "status", "-o", "json", "--config"])
        .arg(config)
        .env_remove("ZTK_DATABASE_URL")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "edge").cloned())
        .unwrap_or_default()
}

/// Waits until the gateway of `config` has the agent connected (or not).
pub fn wait_connected(config: &Path, connected: bool, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let status = edge_status(config);
        if status["agent"]["connected"] == connected {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "the agent is not {} after {within:?}: {status:#}",
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of `kubeconfig` whose user is an exec plugin printing the same token; its runs are
/// counted in `dir/runs`.
fn exec_plugin_kubeconfig(kubeconfig: &Path, dir: &Path) -> PathBuf {
    use ztk::kubeconfig::Kubeconfig;
    std::fs::create_dir_all(dir).unwrap();
    let mut kc = Kubeconfig::load(kubeconfig).unwrap();
    let token = kc.users[0].user.token.take().unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let plugin = dir.join("get-token");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nd=\"$(dirname \"$0\")\"\nn=$(cat \"$d/runs\" 2>/dev/null || echo 0)\necho $((n + 1)) > \"$d/runs\"\n\
         printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}' \"$(cat \"$d/token\")\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    kc.users[0].user.exec = Some(ztk::kubeconfig::ExecConfig {
        api_version: "client.authentication.k8s.io/v1".into(),
        command: plugin.display().to_string(),
        interactive_mode: Some("Never".into()),
        ..Default::default()
    });
    let path = kubeconfig.with_file_name("agent.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
    path
}

fn plugin_runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}

fn write_token(path: &PathBuf, token: &str) {
    std::fs::write(path, format!("{token}\n")).unwrap();
}

#[test]
fn an_agent_in_a_private_network_carries_every_call_and_recovers() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let cluster_kc = dir.path().join("cluster.yaml");
    let (_cluster, cluster_addr) = cluster(&net, &cluster_kc);
    // The agent reaches it with an exec credential plugin (as on EKS, GKE, AKS) that counts
    // its runs.
    let plugin_dir = cluster_kc.parent().unwrap().join("plugin");
    let agent_kc = exec_plugin_kubeconfig(&cluster_kc, &plugin_dir);
    // The gateway's namespace cannot reach the cluster at all.
    assert!(
        TcpStream::connect_timeout(&cluster_addr, Duration::from_secs(1)).is_err(),
        "the test's namespace reaches the cluster at {cluster_addr}: the test proves nothing"
    );
    let mut env = Env::prepare(
        dir,
        "[agents]\ncertificate_ttl = \"12s\"\nkeepalive = \"1s\"",
        "[[clusters]]\nname = \"edge\"\nagent = true\nimpersonate = true\n",
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace("127.0.0.1:0", &format!("{}:0", net.gateway_ip)),
    )
    .unwrap();
    env.serve();
    // The same port after a restart.
    let port = env.url.rsplit(':').next().unwrap().to_string();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            &format!("{}:0", net.gateway_ip),
            &format!("{}:{port}", net.gateway_ip),
        ),
    )
    .unwrap();

    // Not connected yet: answered 503 at once, naming the cluster.
    env.login();
    let started = Instant::now();
    let (_, text) = env
        .kubectl(&["--cluster", "edge", "get", "pods", "-n", "dev"])
        .failure();
    assert!(
        text.contains("the agent of cluster edge is not connected"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no hang: answered after {:?}",
        started.elapsed()
    );

    let token = env
        .gateway_cmd(&["agent", "token", "edge", "--ttl", "10m"])
        .success();
    let token = token.trim();
    assert!(token.starts_with("ztkagent_"), "{token}");
    let token_file = env.path("token");
    write_token(&token_file, token);
    let agent_data = env.path("agent-data");
    let url = env.url.clone();
    let (agent_proc, _logs) = agent(
        &net,
        &[&url],
        &env.ca_file(),
        &agent_kc,
        Some(&token_file),
        &agent_data,
    );
    let mut agent_proc = Some(agent_proc);
    let status = wait_connected(&env.config, true, Duration::from_secs(20));
    assert_eq!(
        status["agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{status:#}"
    );
    assert!(
        status["agent"]["address"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", net.agent_ip)),
        "{status:#}"
    );
    assert_eq!(status["version"], "v1.32.0-ztk-sandbox", "{status:#}");
    let cert = agent_data.join("agent/edge/cert.pem");
    use std::os::unix::fs::PermissionsExt;
    for file in ["cert.pem", "key.pem"] {
        let mode = std::fs::metadata(agent_data.join("agent/edge").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // Short calls, apply and delete, impersonation.
    let pods = env
        .kubectl(&["--cluster", "edge", "get", "pods", "-n", "dev"])
        .success();
    assert!(pods.contains("debug-shell"), "{pods}");
    let whoami = env
        .kubectl(&["--cluster", "edge", "auth", "whoami", "-o", "json"])
        .success();
    let who: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice", "{whoami}");
    let manifest = env.path("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tunnelled\n  namespace: dev\ndata:\n  k: v\n",
    )
    .unwrap();
    env.kubectl(&[
        "--cluster",
        "edge",
        "apply",
        "-f",
        manifest.to_str().unwrap(),
    ])
    .success();
    let got = env
        .kubectl(&[
            "--cluster",
            "edge",
            "get",
            "cm",
            "tunnelled",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.k}",
        ])
        .success();
    assert_eq!(got, "v");
    env.kubectl(&[
        "--cluster",
        "edge",
        "delete",
        "cm",
        "tunnelled",
        "-n",
        "dev",
    ])
    .success();

    // Upgrades: exec over WebSocket and SPDY, with a terminal, cp, port-forward.
    for websockets in ["true", "false"] {
        let out = env
            .kubectl(&[
                "--cluster",
                "edge",
                "exec",
                "-i",
                "-n",
                "dev",
                "debug-shell",
                "--",
                "cat",
            ])
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .stdin_text("through the tunnel\n")
            .success();
        assert_eq!(out, "through the tunnel\n", "ws={websockets}");
    }
    let tty = env
        .program(
            "script",
            &[
                "-qec",
                &format!(
                    "{} kubectl --cluster edge exec -it -n dev debug-shell -- sh -c 'echo tty ok'",
                    ztk_bin()
                ),
                "/dev/null",
            ],
        )
        .output();
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("tty ok"),
        "{}",
        String::from_utf8_lossy(&tty.stdout)
    );
    let local = env.path("up.txt");
    std::fs::write(&local, "x".repeat(100_000)).unwrap();
    env.kubectl(&[
        "--cluster",
        "edge",
        "cp",
        local.to_str().unwrap(),
        "dev/debug-shell:/tmp/up.txt",
    ])
    .success();
    let back = env.path("back.txt");
    env.kubectl(&[
        "--cluster",
        "edge",
        "cp",
        "dev/debug-shell:/tmp/up.txt",
        back.to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap()
    );
    crate::streams::port_forward_echoes(
        env.kubectl(&[
            "--cluster",
            "edge",
            "port-forward",
            "-n",
            "dev",
            "pod/debug-shell",
            "0:8080",
        ]),
        "through the agent",
    );
    let mut logs = env
        .kubectl(&[
            "--cluster",
            "edge",
            "logs",
            "-f",
            "debug-shell",
            "-n",
            "dev",
        ])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(logs.stdout.take().unwrap())
        .lines()
        .next()
        .expect("a log line")
        .unwrap();
    assert!(line.contains("debug-shell"), "{line}");
    let _ = logs.kill();
    let _ = logs.wait();

    // The certificate (12 s) was renewed over the tunnel after 8 s, for the same key.
    let first_cert = std::fs::read_to_string(&cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&cert).unwrap() == first_cert {
        assert!(
            Instant::now() < deadline,
            "the agent's certificate was not renewed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A watch open when the agent is killed ends; calls are answered 503 at once; the agent
    // back (no token needed now) serves the next command within seconds.
    let mut watch = env
        .kubectl(&["--cluster", "edge", "get", "pods", "-n", "dev", "-w"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watch_lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(watch_lines.next().unwrap().unwrap().contains("NAME"));
    // The open watch counts as a call in flight, and its stream as open on the tunnel.
    let start = Instant::now();
    loop {
        let status = edge_status(&env.config);
        if status["in_flight"].as_u64() >= Some(1) && status["agent"]["streams"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = agent_proc.as_ref().unwrap().0.id();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    drop(agent_proc.take());
    let killed = Instant::now();
    loop {
        if watch.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the watch outlived the agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_connected(&env.config, false, Duration::from_secs(5));
    // Nothing left counted in flight once the watch ended.
    let start = Instant::now();
    while edge_status(&env.config)["in_flight"] != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "calls still counted in flight"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let (_, text) = env.kubectl(&["--cluster", "edge", "get", "ns"]).failure();
    assert!(text.contains("not connected"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    // The plugin ran once for all those calls: its credential is cached, never run per call.
    assert_eq!(plugin_runs(&plugin_dir), 1);
    let (agent_proc2, _logs2) = agent(&net, &[&url], &env.ca_file(), &agent_kc, None, &agent_data);
    let back_at = Instant::now();
    wait_connected(&env.config, true, Duration::from_secs(5));
    env.kubectl(&["--cluster", "edge", "get", "ns"]).success();
    assert!(
        back_at.elapsed() < Duration::from_secs(10),
        "the agent served its first command {:?} after it started",
        back_at.elapsed()
    );

    // The gateway restarts: the agent reconnects.
    env.restart_gateway();
    wait_connected(&env.config, true, Duration::from_secs(30));
    env.kubectl(&["--cluster", "edge", "get", "ns"]).success();

    // The link dies silently (the agent's side goes down: no FIN, no RST reaches the gateway):
    // the pings notice, calls are answered 503 at once, and the agent is back with the link.
    let (a, zb) = (net.ns("a"), format!("zb{}", net.tag));
    ip(&["-n", &a, "link", "set", &zb, "down"]);
    let down = Instant::now();
    wait_connected(&env.config, false, Duration::from_secs(8));
    eprintln!(
        "the gateway closed the silent tunnel after {:?}",
        down.elapsed()
    );
    let (_, text) = env.kubectl(&["--cluster", "edge", "get", "ns"]).failure();
    assert!(text.contains("not connected"), "{text}");
    ip(&["-n", &a, "link", "set", &zb, "up"]);
    wait_connected(&env.config, true, Duration::from_secs(30));
    env.kubectl(&["--cluster", "edge", "get", "ns"]).success();

    // Everything was authorized and audited on the gateway, as cluster edge.
    let calls = env.gateway_calls(
        &Filter {
            clusters: vec!["edge".into()],
            ..Default::default()
        },
        10,
    );
    assert!(
        calls.iter().any(|c| c.call.status == 101),
        "exec/cp/port-forward recorded"
    );
    assert!(
        calls.iter().any(|c| c.call.verb == "watch"),
        "the watch recorded"
    );
    assert!(
        calls.iter().any(|c| c.call.status == 503),
        "the refused calls recorded"
    );

    // Revoked: its tunnel closes at once, the agent says why and stops, calls get 503.
    let mut agent_proc2 = agent_proc2;
    env.gateway_cmd(&["agent", "revoke", "edge"]).success();
    let status = exit_within(
        &mut agent_proc2,
        Duration::from_secs(5),
        "the revoked agent",
    );
    assert!(!status.success());
    wait_connected(&env.config, false, Duration::from_secs(5));
    let (_, text) = env.kubectl(&["--cluster", "edge", "get", "ns"]).failure();
    assert!(text.contains("not connected"), "{text}");
    assert!(!cert.exists(), "the revoked certificate was forgotten");

    // The first token, used once, enrolls nobody else.
    let (mut thief, thief_logs) = agent(
        &net,
        &[&url],
        &env.ca_file(),
        &cluster_kc,
        Some(&token_file),
        &env.path("thief"),
    );
    let status = thief.0.wait().unwrap();
    assert!(!status.success());
    let said: Vec<String> = thief_logs.iter().collect();
    assert!(said.iter().any(|l| l.contains("used already")), "{said:#?}");
    assert_eq!(edge_status(&env.config)["agent"]["connected"], false);
}

/// The first bytes the gateway sends on a tunnel connection made with `cert` (PEM chain and
/// key; none: no client certificate), or the error.
fn tunnel_greeting(env: &Env, cert: Option<(&str, &str)>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let roots = ztk::tls::Roots::Pem(std::fs::read(env.ca_file()).unwrap());
    let mut tls =
        ztk::tls::client_config(&roots, cert.map(|(c, k)| (c.as_bytes(), k.as_bytes()))).unwrap();
    tls.alpn_protocols = vec![b"ztk-tunnel/1".to_vec()];
    let addr = env.url.trim_start_matches("https://");
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(tls), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut buf = vec![0u8; 24];
    match stream.read_exact(&mut buf) {
        Ok(()) => Ok(buf),
        Err(e) => Err(e.to_string()),
    }
}

/// The agent door (ALPN `ztk-tunnel/1`) wants a certificate the gateway issued and recorded;
/// enrollment refuses what it must with a Kubernetes `Status`, and throttles guessing.
#[test]
fn the_tunnel_door_and_enrollment_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start_in(dir, "", "[[clusters]]\nname = \"edge\"\nagent = true\n");
    // No certificate, or one of another CA: no tunnel.
    assert!(tunnel_greeting(&env, None).is_err());
    let other = ztk::tls::Ca::generate("another CA").unwrap();
    let stranger = other.issue_client("ztk-agent:edge").unwrap();
    assert!(tunnel_greeting(&env, Some((&stranger.cert_pem, &stranger.key_pem))).is_err());

    // A certificate signed with the agent CA's key (as someone who read the database could)
    // but never issued: refused, and the agent is told why.
    let db = rusqlite::Connection::open(env.path("gw/gateway.db")).unwrap();
    let (ca_cert, ca_key): (String, String) = db
        .query_row("SELECT cert_pem, key_pem FROM agent_ca", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_cert, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ztk-agent:edge");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let forged = params.signed_by(&key, &issuer).unwrap();
    // The TLS handshake passes (the CA signed it); the gateway then speaks HTTP/2 only to
    // tell it is refused.
    let greeting = tunnel_greeting(&env, Some((&forged.pem(), &key.serialize_pem()))).unwrap();
    assert!(greeting.starts_with(b"PRI * HTTP/2.0"), "{greeting:?}");
    let forged_dir = env.path("forged/agent/edge");
    std::fs::create_dir_all(&forged_dir).unwrap();
    std::fs::write(forged_dir.join("cert.pem"), forged.pem()).unwrap();
    std::fs::write(forged_dir.join("key.pem"), key.serialize_pem()).unwrap();
    let kc = env.path("unused.yaml");
    let sandbox = crate::harness::SandboxProcess::start(kc.clone(), false);
    let out = Command::new(ztk_bin())
        .args([
            "agent",
            "--gateway",
            &env.url,
            "--cluster",
            "edge",
            "--ca-file",
        ])
        .arg(env.ca_file())
        .arg("--kubeconfig")
        .arg(&sandbox.kubeconfig)
        .arg("--data-dir")
        .arg(env.path("forged"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("never issued this agent's certificate"),
        "{text}"
    );

    // Enrollment: each refusal a Status with its code.
    let client = crate::harness::https_client::<http_body_util::Full<bytes::Bytes>>(
        std::fs::read(env.ca_file()).unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let post = |body: String| {
        rt.block_on(async {
            let req = http::Request::post(format!("{}/ztk/v1/agents/enroll", env.url))
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["kind"], "Status", "{v}");
            (
                status,
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        })
    };
    let csr = {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    };
    let enroll = |cluster: &str, token: &str, csr: &str| {
        serde_json::json!({"cluster": cluster, "token": token, "csr": csr, "version": "t"})
            .to_string()
    };
    assert_eq!(post("{".into()).0, 400);
    // An unknown cluster is answered as an unknown token: the answer names no cluster.
    let unknown = (
        401,
        "ztk: unknown enrollment token for this cluster".to_string(),
    );
    assert_eq!(post(enroll("nope", "x", &csr)), unknown);
    assert_eq!(
        post(enroll("sandbox", "x", &csr)),
        unknown,
        "not an agent cluster"
    );
    let (code, message) = post(enroll("edge", "ztkagent_guess", "not a csr"));
    assert_eq!(
        (code, message.contains("signing request")),
        (400, true),
        "{message}"
    );
    assert_eq!(post(enroll("edge", "ztkagent_guess", &csr)), unknown);
    // Guessing is throttled per address.
    let codes: Vec<u16> = (0..8)
        .map(|i| post(enroll("edge", &format!("ztkagent_guess{i}"), &csr)).0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
}
