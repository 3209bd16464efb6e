//! A gateway with the sandbox per test, and a command builder for the client side.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use ztk::audit::{AuditStore, CallRow, Filter};

pub const PASSWORD: &str = "correct horse battery staple";
pub const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
pub const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

pub fn ztk_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ztk")
}

pub struct Env {
    pub dir: TempDir,
    pub config: PathBuf,
    pub url: String,
    gateway: Option<Child>,
    /// Every line the gateway printed (stdout and stderr), as it prints them.
    pub gateway_log: Arc<Mutex<Vec<String>>>,
    /// Held while this environment lives: see `machine_alone`.
    _shared: Option<RwLockReadGuard<'static, ()>>,
}

/// Tests run in parallel, each with its own gateway. The load test needs the machine to itself
/// (it keeps both cores busy, which would starve the streams tests beside it): every `Env` holds
/// this lock for reading, the load test holds it for writing. A waiting writer keeps new
/// readers out, so the load test runs as soon as the environments already started are done.
static MACHINE: RwLock<()> = RwLock::new(());

thread_local! {
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Waits until no other test's environment is running, and keeps new ones from starting until
/// the guard is dropped. Environments started on this thread meanwhile share the machine.
pub fn machine_alone() -> RwLockWriteGuard<'static, ()> {
    let guard = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    ALONE.with(|a| a.set(true));
    guard
}

impl Env {
    /// A gateway serving the sandbox as cluster `sandbox`, with user `alice` (group `dev`), who
    /// has the role `edit` everywhere (deny by default: without a binding she could do nothing).
    pub fn start() -> Env {
        Self::start_with("")
    }

    /// Like `start`, with extra top-level TOML keys.
    pub fn start_with(extra: &str) -> Env {
        Self::start_in(tempfile::tempdir().unwrap(), extra, "")
    }

    /// A gateway in `dir`, with extra top-level TOML keys and extra `[[clusters]]` tables.
    pub fn start_in(dir: TempDir, extra: &str, clusters: &str) -> Env {
        let mut env = Self::prepare(dir, extra, clusters);
        env.serve();
        env
    }

    /// Like `start_in`, but the gateway is not started yet (call `serve`).
    pub fn prepare(dir: TempDir, extra: &str, clusters: &str) -> Env {
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"gw\"\n{extra}\n[[clusters]]\nname = \"sandbox\"\nsandbox = true\n{clusters}"
            ),
        )
        .unwrap();
        let shared = if ALONE.with(|a| a.get()) {
            None
        } else {
            Some(MACHINE.read().unwrap_or_else(PoisonError::into_inner))
        };
        let env = Env {
            dir,
            config,
            url: String::new(),
            gateway: None,
            gateway_log: Arc::default(),
            _shared: shared,
        };
        env.gateway_cmd(&["user", "add", "alice", "--group", "dev", "--password-stdin"])
            .stdin_text(&format!("{PASSWORD}\n"))
            .success();
        env.gateway_cmd(&["role", "bind", "edit", "--user", "alice"])
            .success();
        env
    }

    /// Adds a user with these groups (password `PASSWORD`).
    pub fn add_user(&self, name: &str, groups: &[&str]) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        for g in groups {
            args.extend_from_slice(&["--group", g]);
        }
        self.gateway_cmd(&args)
            .stdin_text(&format!("{PASSWORD}\n"))
            .success();
    }

    /// `ztk gateway role ARGS --config ...`.
    pub fn role(&self, args: &[&str]) -> String {
        let mut all = vec!["role"];
        all.extend_from_slice(args);
        self.gateway_cmd(&all).success()
    }

    pub fn serve(&mut self) {
        self.serve_with(&[]);
    }

    /// Starts the gateway with extra environment variables.
    pub fn serve_with(&mut self, env: &[(&str, String)]) {
        let mut cmd = self.ztk(&[
            "gateway",
            "serve",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        let mut child = cmd
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.gateway_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let keep = |line: &str| {
            self.gateway_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.to_string())
        };
        let url = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .unwrap();
            keep(&line);
            if let Some(url) = line.strip_prefix("ztk gateway: listening on ") {
                break url.to_string();
            }
        };
        let log = self.gateway_log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        self.url = url;
        self.gateway = Some(child);
    }

    /// Waits (up to 10 s) until the gateway has printed a line containing `text`.
    #[track_caller]
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self
                .gateway_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(line) = log.iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never printed {text:?}:\n{}",
                log.join("\n")
            );
            drop(log);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.path("gw/ca.pem")
    }

    /// The gateway's API client, trusting the gateway's CA.
    pub fn gateway_api(&self) -> ztk::client::api::GatewayApi {
        let roots = ztk::tls::Roots::Pem(std::fs::read(self.ca_file()).unwrap());
        ztk::client::api::GatewayApi::new(&self.url, &roots).unwrap()
    }

    /// A ztk command with the client's dirs (and HOME) inside the test's temp dir.
    pub fn ztk(&self, args: &[&str]) -> Cmd {
        let mut cmd = Command::new(ztk_bin());
        cmd.args(args)
            .env("ZTK_CONFIG_DIR", self.path("client/config"))
            .env("ZTK_DATA_DIR", self.path("client/data"))
            .env("ZTK_TOKEN_STORE", "file")
            .env("HOME", self.path("home"))
            .env("KUBECACHEDIR", self.path("home/kube-cache"))
            .env_remove("ZTK_GATEWAY")
            .env_remove("ZTK_KUBECTL")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        Cmd { cmd, stdin: None }
    }

    pub fn gateway_cmd(&self, args: &[&str]) -> Cmd {
        let mut all = vec!["gateway"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        self.ztk(&all)
    }

    pub fn login(&self) {
        self.login_as("alice");
    }

    /// Logs the client in as `user` (password `PASSWORD`).
    pub fn login_as(&self, user: &str) {
        self.login_cmd(user).success();
    }

    pub fn login_cmd(&self, user: &str) -> Cmd {
        self.ztk(&[
            "login",
            "--gateway",
            &self.url,
            "--ca-file",
            self.ca_file().to_str().unwrap(),
            "--user",
            user,
            "--password-stdin",
        ])
        .stdin_text(&format!("{PASSWORD}\n"))
    }

    /// Any program with the client's environment (dirs, HOME, KUBECONFIG unset).
    pub fn program(&self, program: &str, args: &[&str]) -> Cmd {
        let mut cmd = self.ztk(args);
        let mut plain = Command::new(program);
        plain.args(args);
        for (key, value) in cmd.cmd.get_envs() {
            match value {
                Some(v) => plain.env(key, v),
                None => plain.env_remove(key),
            };
        }
        plain.stdin(Stdio::null());
        cmd.cmd = plain;
        cmd
    }

    /// The kubeconfig written by `ztk kubeconfig` (default place).
    pub fn plain_kubeconfig(&self) -> PathBuf {
        self.path("home/.kube/ztk.yaml")
    }

    /// Plain `kubectl ARGS` (the machine's, or `ZTK_TEST_KUBECTL`-free explicit path) with the
    /// generated kubeconfig: the exec plugin and the persistent proxy do the rest.
    pub fn plain(&self, kubectl: &str, args: &[&str]) -> Cmd {
        self.program(kubectl, args)
            .env("KUBECONFIG", self.plain_kubeconfig())
    }

    /// Logs in and writes the kubeconfig for plain kubectl.
    pub fn setup_plain(&self) {
        self.login();
        let out = self.ztk(&["kubeconfig"]).success();
        assert!(out.contains("export KUBECONFIG="), "{out}");
    }

    /// The persistent proxy's pid, if one runs for this test.
    pub fn proxy_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("client/data/proxy/proxy.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Local records appear after the proxy's writer commits them: poll briefly.
    pub fn local_calls(&self, filter: &Filter, at_least: usize) -> Vec<CallRow> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = self.local_store().list_calls(filter).unwrap();
            if rows.len() >= at_least || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ztk kubectl ARGS`, with the machine's kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Cmd {
        let mut all = vec!["kubectl"];
        all.extend_from_slice(args);
        self.ztk(&all)
    }

    pub fn local_store(&self) -> AuditStore {
        AuditStore::open(&self.path("client/data/audit.db")).unwrap()
    }

    pub fn gateway_store(&self) -> AuditStore {
        AuditStore::open(&self.path("gw/audit.db")).unwrap()
    }

    /// Gateway records appear after its writer commits them: poll briefly.
    pub fn gateway_calls(&self, filter: &Filter, at_least: usize) -> Vec<CallRow> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = self.gateway_store().list_calls(filter).unwrap();
            if rows.len() >= at_least || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running gateway's pid.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(|c| c.id())
    }

    /// Starts the gateway again on the port it had (clients keep their login), after a stop
    /// or a kill.
    pub fn restart_gateway(&mut self) {
        self.stop_gateway();
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&self.config, text).unwrap();
        let url = self.url.clone();
        self.serve();
        assert_eq!(self.url, url);
    }

    pub fn stop_gateway(&mut self) {
        if let Some(mut child) = self.gateway.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The persistent proxy that this test's plugin started, by the pid it wrote.
        if let Some(pid) = self.proxy_pid() {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if let Some(mut child) = self.gateway.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A standalone `ztk sandbox serve` process, standing in for a real cluster.
pub struct SandboxProcess {
    child: Child,
    pub kubeconfig: PathBuf,
}

impl SandboxProcess {
    pub fn start(kubeconfig: PathBuf, client_cert: bool) -> SandboxProcess {
        let mut cmd = Command::new(ztk_bin());
        cmd.args([
            "sandbox",
            "serve",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]);
        if client_cert {
            cmd.arg("--client-cert");
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("sandbox exited before listening")
                .unwrap();
            if line.starts_with("ztk sandbox: listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        SandboxProcess { child, kubeconfig }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cmd {
    pub cmd: Command,
    stdin: Option<String>,
}

impl Cmd {
    pub fn stdin_text(mut self, text: &str) -> Cmd {
        self.stdin = Some(text.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    pub fn output(mut self) -> Output {
        if self.stdin.is_some() {
            self.cmd.stdin(Stdio::piped());
        }
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = self.stdin.take() {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts exit 0; returns stdout.
    #[track_caller]
    pub fn success(self) -> String {
        let desc = format!("{:?}", self.cmd);
        let out = self.output();
        assert!(
            out.status.success(),
            "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts a non-zero exit; returns stdout + stderr.
    #[track_caller]
    pub fn failure(self) -> (i32, String) {
        let desc = format!("{:?}", self.cmd);
        let out = self.output();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{desc} unexpectedly succeeded:\n{text}"
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// An HTTPS client (HTTP/1.1) that trusts `ca_pem` and sends exactly the request it is given:
/// for what kubectl never sends.
pub fn https_client<B>(
    ca_pem: Vec<u8>,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let tls = ztk::tls::client_config(&ztk::tls::Roots::Pem(ca_pem), None).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}
