//! Several gateways, one PostgreSQL: three gateways share a throwaway database behind a small
//! TCP round-robin balancer; twenty clients run `ztk kubectl` through it while one gateway is
//! `kill -9`ed and restarted. Afterwards every call is in the audit exactly once, every command
//! has its calls, the chain verifies (checkpoints of all three keys), the file sink holds every
//! record, and no client saw an error but the commands in flight on the killed gateway.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{machine_alone, ztk_bin, SandboxProcess, PASSWORD};
use ztk::audit::{AuditStore, Filter};

const GATEWAYS: usize = 3;
const CLIENTS: usize = 20;
/// Commands per client; each lists five kinds of resource, one call each.
const COMMANDS: usize = 20;
const KINDS: &str = "pods,services,configmaps,secrets,serviceaccounts";

/// Round robin over the backends, skipping the ones that refuse connections (a dead gateway).
struct Balancer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let first = next.fetch_add(1, Ordering::Relaxed);
                let backend = (0..backends.len()).find_map(|i| {
                    let addr = backends[(first + i) % backends.len()];
                    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
                });
                let Some(backend) = backend else { continue };
                let (c2, b2) = (client.try_clone().unwrap(), backend.try_clone().unwrap());
                std::thread::spawn(move || splice(client, backend));
                std::thread::spawn(move || splice(b2, c2));
            }
        });
        Balancer { addr, stop }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn splice(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

struct Gateway {
    config: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Gateway {
    /// Starts the gateway and waits until it listens. The first start takes a port from the
    /// kernel (`listen = "127.0.0.1:0"`; a port picked free beforehand may be taken by another
    /// test's connection meanwhile); the config is then pinned to it, so a restart comes back
    /// on the same port (as behind a load balancer).
    fn start(&mut self) {
        let mut child = Command::new(ztk_bin())
            .args(["gateway", "serve", "--config"])
            .arg(&self.config)
            .env_remove("ZTK_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Its stderr shown as it comes, and kept for the message if it exits before listening.
        let said = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let keep = said.clone();
        let echo = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut said = keep.lock().unwrap_or_else(|e| e.into_inner());
                said.push_str(&line);
                said.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                let _ = echo.join();
                panic!(
                    "gateway {} exited before listening ({status}):\n{}",
                    self.config.display(),
                    said.lock().unwrap_or_else(|e| e.into_inner())
                );
            };
            if let Some(url) = line.strip_prefix("ztk gateway: listening on ") {
                break url
                    .trim()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        };
        if self.port == 0 {
            self.port = port;
            let text = std::fs::read_to_string(&self.config).unwrap();
            let pinned = text.replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            );
            std::fs::write(&self.config, pinned).unwrap();
        }
        assert_eq!(port, self.port, "a restarted gateway listens where it did");
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ztk(client: &Path) -> Command {
    let mut c = Command::new(ztk_bin());
    c.env("ZTK_CONFIG_DIR", client.join("config"))
        .env("ZTK_DATA_DIR", client.join("data"))
        .env("ZTK_TOKEN_STORE", "file")
        .env("HOME", client.join("home"))
        .env("KUBECACHEDIR", client.join("home/kube-cache"))
        .env_remove("ZTK_GATEWAY")
        .env_remove("ZTK_KUBECTL")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    c
}

fn run_ok(mut c: Command, stdin: Option<&str>) -> String {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` gateways on `database`, each with its own data dir and port, reaching the cluster of
/// `kubeconfig`; `extra`: more top-level settings for each.
fn gateways_on(
    root: &Path,
    database: &str,
    kubeconfig: &Path,
    n: usize,
    extra: &str,
) -> Vec<Gateway> {
    (0..n)
        .map(|i| {
            let config = root.join(format!("gw{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:0\"\ndata_dir = \"gw{i}\"\ndatabase = \"{database}\"\n\
                     {}\n[[clusters]]\nname = \"sandbox\"\nkubeconfig = \"{}\"\n",
                    extra.replace("{i}", &i.to_string()),
                    kubeconfig.display()
                ),
            )
            .unwrap();
            Gateway {
                config,
                data: root.join(format!("gw{i}")),
                port: 0,
                child: None,
            }
        })
        .collect()
}

/// Logs the client in `client` (its dirs) to `gateway` as alice.
fn login(client: &Path, gateway: &Gateway) {
    let mut login = ztk(client);
    login
        .args([
            "login",
            "--gateway",
            &format!("https://127.0.0.1:{}", gateway.port),
        ])
        .arg("--ca-file")
        .arg(gateway.data.join("ca.pem"))
        .args(["--user", "alice", "--password-stdin"]);
    run_ok(login, Some(&format!("{PASSWORD}\n")));
}

/// User `alice` with the role `edit` everywhere, made through `config` (the shared database).
fn add_alice(config: &Path) {
    let mut add = Command::new(ztk_bin());
    add.args([
        "gateway",
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--config",
    ])
    .arg(config);
    run_ok(add, Some(&format!("{PASSWORD}\n")));
    let mut bind = Command::new(ztk_bin());
    bind.args([
        "gateway", "role", "bind", "edit", "--user", "alice", "--config",
    ])
    .arg(config);
    run_ok(bind, None);
}

#[test]
fn three_gateways_on_one_database_lose_nothing_when_one_is_killed() {
    let _alone = machine_alone();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sandbox = SandboxProcess::start(root.join("cluster.yaml"), false);
    let database = ztk::db::testing::database();

    let mut gateways = gateways_on(
        root,
        &database,
        &sandbox.kubeconfig,
        GATEWAYS,
        &format!(
            "max_sessions_per_user = 0\naudit_reconcile_after = \"1s\"\naudit_checkpoint_interval = \"1s\"\n\
             [[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"{}\"\nmax_size = \"1GiB\"",
            root.join("sink{i}.jsonl").display()
        ),
    );
    // Users and bindings are in the shared database: made once, through any gateway's config.
    add_alice(&gateways[0].config);
    // One TLS identity for all three (as behind a real load balancer): made by the first.
    gateways[0].start();
    for g in &gateways[1..] {
        std::fs::create_dir_all(&g.data).unwrap();
        for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
            std::fs::copy(gateways[0].data.join(file), g.data.join(file)).unwrap();
        }
    }
    for g in &mut gateways[1..] {
        g.start();
    }
    let balancer = Balancer::start(
        gateways
            .iter()
            .map(|g| SocketAddr::from(([127, 0, 0, 1], g.port)))
            .collect(),
    );
    let url = format!("https://{}", balancer.addr);
    let ca = gateways[0].data.join("ca.pem");

    let clients: Vec<PathBuf> = (0..CLIENTS)
        .map(|i| root.join(format!("client{i}")))
        .collect();
    std::thread::scope(|s| {
        for client in &clients {
            let (url, ca) = (&url, &ca);
            s.spawn(move || {
                let mut login = ztk(client);
                login
                    .args(["login", "--gateway", url, "--ca-file"])
                    .arg(ca)
                    .args(["--user", "alice", "--password-stdin"]);
                run_ok(login, Some(&format!("{PASSWORD}\n")));
            });
        }
    });

    // The run: every client runs its commands; when a third of them are done, gateway 1 is
    // killed, and started again two seconds later.
    let done = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(Instant, Instant, bool, String)>> = Mutex::new(Vec::new());
    let killed_at: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for client in &clients {
            let (done, outcomes) = (&done, &outcomes);
            s.spawn(move || {
                for _ in 0..COMMANDS {
                    let started = Instant::now();
                    let out = ztk(client)
                        .args(["kubectl", "get", KINDS, "-n", "dev"])
                        .output()
                        .unwrap();
                    outcomes.lock().unwrap().push((
                        started,
                        Instant::now(),
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let total = CLIENTS * COMMANDS;
        while done.load(Ordering::Relaxed) < total / 3 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let at = Instant::now();
        gateways[1].kill();
        std::thread::sleep(Duration::from_secs(2));
        gateways[1].start();
        *killed_at.lock().unwrap() = Some((at, Instant::now()));
    });
    let (kill, back) = killed_at.into_inner().unwrap().unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.len(), CLIENTS * COMMANDS);
    // Errors only for commands in flight when the gateway died.
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.2).collect();
    for (started, ended, _, stderr) in &failed {
        assert!(
            *started <= kill && *ended >= kill,
            "a command that did not overlap the kill failed: {stderr}"
        );
    }
    assert!(failed.len() <= CLIENTS, "{} commands failed", failed.len());
    let _ = back;

    // Each client ships what it still holds; the gateways recover lost records from them.
    std::thread::scope(|s| {
        for client in &clients {
            s.spawn(move || {
                let mut push = ztk(client);
                push.args(["audit", "push"]);
                run_ok(push, None);
            });
        }
    });

    let store = AuditStore::open_postgres(
        ztk::db::PgUrl::parse(&database, None).unwrap(),
        &root.join("test-spill"),
    )
    .unwrap();
    // Every call a client saw answered by a gateway is in the trail exactly once (recovered
    // from the client's record if the killed gateway lost its own).
    let mut expected_calls;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gateway_calls = store.list_calls(&Filter::default()).unwrap();
        let mut by_request: std::collections::HashMap<uuid::Uuid, usize> = Default::default();
        for c in &gateway_calls {
            if let Some(r) = c.call.request_id {
                *by_request.entry(r).or_default() += 1;
            }
        }
        let mut missing = Vec::new();
        let mut doubled = Vec::new();
        expected_calls = 0;
        for client in &clients {
            let local = AuditStore::open(&client.join("data/audit.db")).unwrap();
            for c in local.list_calls(&Filter::default()).unwrap() {
                if !ztk::audit::reconcile::answered_by_gateway(&c.call) {
                    continue;
                }
                expected_calls += 1;
                match by_request.get(&c.call.id).copied().unwrap_or(0) {
                    0 => missing.push(c.call.id),
                    1 => {}
                    _ => doubled.push(c.call.id),
                }
            }
        }
        assert!(doubled.is_empty(), "calls recorded twice: {doubled:?}");
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected_calls} calls missing from the trail: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        expected_calls >= CLIENTS * COMMANDS * 5 - failed.len() * 5,
        "{expected_calls} calls"
    );

    let recovered = store
        .list_calls(&Filter::default())
        .unwrap()
        .iter()
        .filter(|c| c.call.reason.contains("recovered"))
        .count();
    eprintln!(
        "ha: {} commands, {} failed while gateway 1 was killed, {expected_calls} calls answered, {recovered} recovered from clients' records",
        outcomes.len(),
        failed.len()
    );

    // Every command has its calls, linked.
    for client in &clients {
        let local = AuditStore::open(&client.join("data/audit.db")).unwrap();
        for cmd in local.list_commands(&Filter::default()).unwrap() {
            let stored = store.command(cmd.command.id).unwrap();
            assert!(stored.is_some(), "command {} not shipped", cmd.command.id);
            let filter = Filter {
                command_id: Some(cmd.command.id),
                ..Default::default()
            };
            let mine = local
                .list_calls(&filter)
                .unwrap()
                .into_iter()
                .filter(|c| ztk::audit::reconcile::answered_by_gateway(&c.call))
                .count();
            assert_eq!(
                store.count_calls(&filter).unwrap() as usize,
                mine,
                "command {} has {mine} calls on its client",
                cmd.command.id
            );
        }
    }

    // One chain, checkpoints of the three gateways' keys: verify with all three pinned.
    let keys: Vec<String> = gateways
        .iter()
        .map(|g| {
            let key =
                ztk::audit::chain::SigningKey::load_or_create(&g.data.join("audit-signing-key.p8"))
                    .unwrap();
            format!("\"{}\"", hex::encode(key.public_key()))
        })
        .collect();
    let text = std::fs::read_to_string(&gateways[0].config).unwrap();
    std::fs::write(
        &gateways[0].config,
        text.replacen(
            "max_sessions_per_user = 0",
            &format!(
                "max_sessions_per_user = 0\naudit_checkpoint_keys = [{}]",
                keys[1..].join(", ")
            ),
            1,
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut verify = Command::new(ztk_bin());
    verify
        .args(["gateway", "audit", "verify", "--json", "--config"])
        .arg(&gateways[0].config);
    let report: serde_json::Value = serde_json::from_str(&run_ok(verify, None)).unwrap();
    assert_eq!(report["problem_count"], 0, "{report:#}");
    assert!(
        report["valid_checkpoints"].as_u64().unwrap() >= 2,
        "{report:#}"
    );

    // The sink: delivered by one gateway at a time, and by another after the kill; together
    // the files hold every record (repeats only across the takeover).
    let calls: Vec<String> = store
        .list_calls(&Filter::default())
        .unwrap()
        .into_iter()
        .filter(|c| c.call.reason != "stream open")
        .map(|c| c.call.id.to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = std::collections::HashSet::new();
        for i in 0..GATEWAYS {
            if let Ok(text) = std::fs::read_to_string(root.join(format!("sink{i}.jsonl"))) {
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if let Some(id) = v["id"].as_str() {
                        seen.insert(id.to_string());
                    }
                }
            }
        }
        let missing = calls.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} calls never reached the sink",
            calls.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(balancer);
    drop(sandbox);
}

/// `ztk gateway migrate`: a single gateway's SQLite data copied into PostgreSQL; run twice it
/// copies nothing more; the gateway started on the database keeps its users' sessions and its
/// whole trail, which verifies; a database holding another trail is refused.
#[test]
fn a_single_gateways_data_moves_to_postgresql() {
    let mut env = crate::harness::Env::start();
    env.login();
    env.kubectl(&["get", "pods", "-n", "dev"]).success();
    env.kubectl(&["get", "ns"]).success();
    env.ztk(&["audit", "push"]).success();
    let before = env.gateway_store().list_calls(&Filter::default()).unwrap();
    assert!(before.len() >= 2);
    env.stop_gateway();

    let database = ztk::db::testing::database();
    // A password on the command line is refused (the process list shows it).
    let with_password = database.replacen("ztk@", "ztk:secret@", 1);
    let (code, err) = env
        .gateway_cmd(&["migrate", "--to", &with_password])
        .failure();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--password-file") && !err.contains("secret"),
        "{err}"
    );

    let first = env
        .gateway_cmd(&["migrate", "--to", &database, "--json"])
        .success();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["verify"]["problem_count"], 0, "{first:#}");
    let rows = |v: &serde_json::Value, table: &str| {
        v["copied"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["table"] == table)
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows(&first, "api_calls"), before.len() as u64);
    assert!(rows(&first, "sessions") >= 1 && rows(&first, "users") == 1);
    // Again: nothing more to copy, and still verified (through ZTK_DATABASE_URL this time).
    let second = env
        .gateway_cmd(&["migrate", "--json"])
        .env("ZTK_DATABASE_URL", &database)
        .success();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    for table in ["api_calls", "commands", "chain", "sessions", "client_calls"] {
        assert_eq!(rows(&second, table), 0, "{table}: {second:#}");
    }
    assert_eq!(second["verify"]["problem_count"], 0);

    // The gateway on PostgreSQL: the client's session still works, the trail is all there.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("database = \"{database}\"\n{text}")).unwrap();
    env.restart_gateway();
    env.kubectl(&["get", "pods", "-n", "dev"]).success();
    let out = env
        .ztk(&[
            "audit", "list", "--remote", "--view", "calls", "-o", "json", "--limit", "1000",
        ])
        .success();
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for c in &before {
        assert!(
            listed.iter().any(|l| l["id"] == c.call.id.to_string()),
            "{} missing after the move",
            c.call.id
        );
    }
    let verify = env.gateway_cmd(&["audit", "verify"]).success();
    assert!(verify.starts_with("OK: postgresql://"), "{verify}");

    // Another gateway's SQLite data into this database: refused, nothing written. (The first
    // environment goes first: an environment holds the machine's lock for reading, and a
    // second one taken meanwhile would wait behind the HA test waiting to run alone.)
    drop(env);
    let other = crate::harness::Env::start();
    other.login();
    other.kubectl(&["get", "ns"]).success();
    let mut other = other;
    other.stop_gateway();
    let (code, err) = other.gateway_cmd(&["migrate", "--to", &database]).failure();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds another audit trail"), "{err}");
}

/// A session revoked through one gateway's database ends a watch another gateway relays,
/// within seconds; the session is refused on both at once after.
#[test]
fn a_revocation_closes_watches_on_every_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sandbox = SandboxProcess::start(root.join("cluster.yaml"), false);
    let database = ztk::db::testing::database();
    let mut gateways = gateways_on(root, &database, &sandbox.kubeconfig, 2, "");
    add_alice(&gateways[0].config);
    for g in &mut gateways {
        g.start();
    }
    // The client talks to gateway 1 only.
    let client = root.join("client");
    login(&client, &gateways[1]);
    let mut watch = ztk(&client)
        .args(["kubectl", "get", "pods", "-n", "dev", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(
        lines.next().unwrap().unwrap().contains("NAME"),
        "the watch runs"
    );
    // Revoked through gateway 0's config (the shared database).
    let mut revoke = Command::new(ztk_bin());
    revoke
        .args(["gateway", "session", "revoke", "alice", "--config"])
        .arg(&gateways[0].config);
    run_ok(revoke, None);
    let revoked = Instant::now();
    loop {
        if watch.try_wait().unwrap().is_some() {
            break;
        }
        if revoked.elapsed() > Duration::from_secs(10) {
            let _ = watch.kill();
            panic!("the watch on the other gateway stayed open after the revocation");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "watch on the other gateway closed {:?} after the revocation",
        revoked.elapsed()
    );
    assert!(revoked.elapsed() < Duration::from_secs(5));
    let out = ztk(&client)
        .args(["kubectl", "get", "pods", "-n", "dev"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the revoked session still works");
}

/// `ztk agent` (no network namespace: what is tested here is several gateways and agents).
fn start_agent(
    gateways: &[Gateway],
    ca: &Path,
    kubeconfig: &Path,
    token: &Path,
    data: &Path,
    proxy: Option<u16>,
) -> Child {
    let mut cmd = Command::new(ztk_bin());
    cmd.arg("agent");
    if let Some(port) = proxy {
        // From the environment, as a proxy URL with a password should be given.
        cmd.env("ZTK_AGENT_PROXY", format!("http://127.0.0.1:{port}"));
    }
    for g in gateways {
        cmd.args(["--gateway", &format!("https://127.0.0.1:{}", g.port)]);
    }
    cmd.arg("--ca-file")
        .arg(ca)
        .args(["--cluster", "edge", "--kubeconfig"])
        .arg(kubeconfig)
        .arg("--token-file")
        .arg(token)
        .arg("--data-dir")
        .arg(data)
        .env("ZTK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Agents keep a tunnel to every gateway of a PostgreSQL-shared group: enrolled through one
/// gateway, accepted by all; two agents of one cluster share its calls, and one stopping
/// (SIGTERM) drains without failing a call; a gateway killed leaves the others serving; a
/// revocation made through one gateway closes the tunnels of all.
#[test]
fn agents_keep_a_tunnel_to_every_gateway_and_drain_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sandbox = SandboxProcess::start(root.join("cluster.yaml"), false);
    let database = ztk::db::testing::database();
    let mut gateways = gateways_on(
        root,
        &database,
        &sandbox.kubeconfig,
        2,
        "[[clusters]]\nname = \"edge\"\nagent = true\n",
    );
    add_alice(&gateways[0].config);
    for g in &mut gateways {
        g.start();
    }
    // One file trusting both gateways' CAs.
    let ca = root.join("gateways-ca.pem");
    let mut pem = std::fs::read(gateways[0].data.join("ca.pem")).unwrap();
    pem.extend(std::fs::read(gateways[1].data.join("ca.pem")).unwrap());
    std::fs::write(&ca, pem).unwrap();
    // Agent 1 reaches the gateways through an HTTP CONNECT proxy (egress from a private
    // network often must).
    let proxy = crate::clusters::ForwardProxy::start();
    let mut agents = Vec::new();
    for i in 0..2 {
        let mut token = Command::new(ztk_bin());
        token
            .args(["gateway", "agent", "token", "edge", "--config"])
            .arg(&gateways[i].config)
            .env_remove("ZTK_DATABASE_URL");
        let token_file = root.join(format!("token{i}"));
        std::fs::write(&token_file, run_ok(token, None)).unwrap();
        agents.push(crate::agent::Proc(start_agent(
            &gateways,
            &ca,
            &sandbox.kubeconfig,
            &token_file,
            &root.join(format!("agent{i}")),
            (i == 1).then_some(proxy.port),
        )));
    }
    for g in &gateways {
        let start = Instant::now();
        while crate::agent::edge_status(&g.config)["agent"]["tunnels"] != 2 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{:#}",
                crate::agent::edge_status(&g.config)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Its enrollment and one tunnel to each gateway went through the proxy.
    assert_eq!(proxy.connect.load(Ordering::Relaxed), 3);
    let client = root.join("client");
    login(&client, &gateways[1]);
    // Calls keep coming while agent 0 drains and gateway 0 dies.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (stop, failures, calls, client) = (
            stop.clone(),
            failures.clone(),
            calls.clone(),
            client.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = ztk(&client)
                    .args(["kubectl", "--cluster", "edge", "get", "pods", "-n", "dev"])
                    .output()
                    .unwrap();
                calls.fetch_add(1, Ordering::Relaxed);
                if !out.status.success() {
                    failures
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(agents[0].0.id() as i32, libc::SIGTERM) };
    let drained = Instant::now();
    let status = agents[0].0.wait().unwrap();
    assert!(status.success(), "the agent stopped cleanly: {status}");
    assert!(drained.elapsed() < Duration::from_secs(12));
    gateways[0].kill();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(calls.load(Ordering::Relaxed) >= 3, "calls were made");
    assert!(
        failures.is_empty(),
        "calls failed while an agent drained: {failures:#?}"
    );
    assert_eq!(
        crate::agent::edge_status(&gateways[1].config)["agent"]["tunnels"],
        1
    );

    // Revoked through the other gateway's config: the remaining agent is refused and stops.
    let mut revoke = Command::new(ztk_bin());
    revoke
        .args(["gateway", "agent", "revoke", "edge", "--config"])
        .arg(&gateways[0].config)
        .env_remove("ZTK_DATABASE_URL");
    run_ok(revoke, None);
    let status =
        crate::agent::exit_within(&mut agents[1], Duration::from_secs(5), "the revoked agent");
    assert!(!status.success());
    crate::agent::wait_connected(&gateways[1].config, false, Duration::from_secs(3));
}
