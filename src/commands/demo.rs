//! `ztk demo`: the whole product on the built-in sandbox, in a temporary directory.
//!
//! Starts a gateway with the sandbox cluster, adds a user, logs in with an isolated client
//! config, runs a few kubectl commands through ztk, prints both audit logs and the web
//! console's address with a sign-in, and cleans up (with `--keep`, only after Ctrl-C, so the
//! console can be explored). Each step runs this same binary as a child process, exactly as a
//! user would type it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// Try ztk end to end on the built-in sandbox cluster (no cluster needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the gateway and its web console running (and the temporary directory) until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// The kubectl binary to run.
    #[arg(
        long,
        env = "ZTK_KUBECTL",
        value_name = "PATH",
        default_value = "kubectl"
    )]
    kubectl: PathBuf,
}

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: dev
  labels: {app: hello}
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: hello
        image: nginx:1.27
        ports:
        - containerPort: 80
"#;

struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    kubectl: PathBuf,
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .env("ZTK_CONFIG_DIR", self.dir.join("client/config"))
            .env("ZTK_DATA_DIR", self.dir.join("client/data"))
            .env("ZTK_TOKEN_STORE", "file")
            .env("ZTK_KUBECTL", &self.kubectl)
            .env_remove("ZTK_GATEWAY");
        cmd
    }

    /// Runs one visible step, optionally feeding `input` on stdin.
    fn step(&self, args: &[&str], input: Option<&str>) -> Result<()> {
        println!("\n{}", bold(&format!("$ ztk {}", args.join(" "))));
        let mut cmd = self.command(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        if let Some(text) = input {
            child
                .stdin
                .take()
                .context("no stdin")?
                .write_all(text.as_bytes())?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("the demo step `ztk {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<i32> {
    let tmp = crate::fsutil::private_tempdir_in(&std::env::temp_dir(), "ztk-demo-")?;
    let demo = Demo {
        exe: std::env::current_exe().context("cannot find the ztk binary")?,
        dir: tmp.path().to_path_buf(),
        kubectl: args.kubectl,
    };
    let config = demo.dir.join("gateway.toml");
    std::fs::write(
        &config,
        "# A gateway on a free loopback port, serving the built-in sandbox cluster.\n\
         listen = \"127.0.0.1:0\"\ndata_dir = \"gateway\"\n\n[[clusters]]\nname = \"sandbox\"\nsandbox = true\n",
    )?;
    std::fs::write(demo.dir.join("hello.yaml"), MANIFEST)?;
    let config_arg = config.display().to_string();

    println!("ztk demo: working in {}", demo.dir.display());
    demo.step(
        &[
            "gateway",
            "user",
            "add",
            "demo",
            "--group",
            "developers",
            "--group",
            "ztk-admins",
            "--password-stdin",
            "--config",
            &config_arg,
        ],
        Some("demo-password\n"),
    )?;
    // Deny by default: a new user can do nothing until a role is bound.
    demo.step(
        &[
            "gateway",
            "role",
            "bind",
            "edit",
            "--user",
            "demo",
            "--config",
            &config_arg,
        ],
        None,
    )?;

    println!(
        "\n{}",
        bold(&format!("$ ztk gateway serve --config {config_arg} &"))
    );
    let mut gateway = GatewayProcess::start(&demo, &config_arg)?;
    let url = gateway.url.clone();
    let ca = demo.dir.join("gateway/ca.pem").display().to_string();

    let result = (|| -> Result<()> {
        demo.step(
            &[
                "login",
                "--gateway",
                &url,
                "--ca-file",
                &ca,
                "--user",
                "demo",
                "--password-stdin",
            ],
            Some("demo-password\n"),
        )?;
        demo.step(&["status"], None)?;
        demo.step(&["kubectl", "get", "namespaces"], None)?;
        demo.step(&["access", "can-i", "get", "secrets", "-n", "dev"], None)?;
        demo.step(&["kubectl", "get", "pods", "-A"], None)?;
        let manifest = demo.dir.join("hello.yaml").display().to_string();
        demo.step(&["kubectl", "apply", "-f", &manifest], None)?;
        demo.step(&["kubectl", "get", "deployments", "-n", "dev"], None)?;
        demo.step(
            &["kubectl", "delete", "deployment", "hello", "-n", "dev"],
            None,
        )?;
        demo.step(&["audit", "list", "--limit", "15"], None)?;
        println!("\nThe gateway holds its own, authoritative record of the same calls:");
        demo.step(
            &["gateway", "audit", "--config", &config_arg, "--limit", "8"],
            None,
        )?;
        Ok(())
    })();
    if result.is_ok() {
        println!(
            "\n{}\n  {url}/\n  sign in as demo, password demo-password (the gateway's CA: {ca})\n  kubectl in the browser: {url}/shell?cluster=sandbox&namespace=dev",
            bold("The web console (Audit Logs › KubeCTL, latency and activity, who can do what, kubectl shell):")
        );
    }
    if result.is_ok() && args.keep {
        println!(
            "\nztk demo: the gateway keeps running; press Ctrl-C to stop it and clean up {}",
            demo.dir.display()
        );
        wait_for_interrupt();
    }
    gateway.stop();
    result?;
    println!("\nztk demo: done; cleaned up {}", demo.dir.display());
    Ok(0)
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
fn wait_for_interrupt() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(runtime) = runtime {
        runtime.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut term) = signal(SignalKind::terminate()) {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    return;
                }
            }
            let _ = tokio::signal::ctrl_c().await;
        });
    }
}

struct GatewayProcess {
    child: Child,
    url: String,
}

impl GatewayProcess {
    fn start(demo: &Demo, config: &str) -> Result<GatewayProcess> {
        let mut child = demo
            .command(&["gateway", "serve", "--config", config])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the gateway")?;
        let stdout = child.stdout.take().context("no gateway stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                bail!("the gateway exited before it was ready");
            };
            let line = line?;
            println!("{line}");
            if let Some(url) = line.strip_prefix("ztk gateway: listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining the gateway's output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(GatewayProcess { child, url })
    }

    fn stop(&mut self) {
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bold on a terminal, unless NO_COLOR is set.
fn bold(text: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}
