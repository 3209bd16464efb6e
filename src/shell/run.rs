//! Starts one web-shell command: the host's kubectl, confined (`confine`), with an empty
//! environment, `HOME` and `--cache-dir` in a private 0700 directory of its own, a 0600
//! kubeconfig there that points at the gateway's shell port with the command's credential,
//! and a pseudo-terminal (`pty`) as its terminal. The directory is removed when the command
//! ends.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use tokio::io::unix::AsyncFd;

use super::confine::{self, Confinement, Enforcement, Limits};
use super::pty;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot prepare the command's directory under {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open a terminal for the command: {0}")]
    Pty(std::io::Error),
    #[error(transparent)]
    Confine(#[from] confine::ConfineError),
    #[error("cannot start {kubectl}: {source}")]
    Spawn {
        kubectl: PathBuf,
        source: std::io::Error,
    },
}

/// What to run.
pub struct Spec<'a> {
    pub kubectl: &'a Path,
    /// kubectl's arguments, as checked by `line::check` (without `kubectl`).
    pub args: &'a [String],
    /// Where the command's private directory is made (0700, one per command).
    pub parent_dir: &'a Path,
    /// `https://127.0.0.1:PORT/k8s/CLUSTER`.
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub token: &'a str,
    pub namespace: &'a str,
    pub connect_port: u16,
    pub limits: Limits,
    /// The pasted manifest, for `-f -`.
    pub stdin: Option<Vec<u8>>,
    pub cols: u16,
    pub rows: u16,
}

/// A running command.
pub struct Running {
    pub child: tokio::process::Child,
    /// The process group (the child leads its own session).
    pub pgid: i32,
    pub terminal: AsyncFd<OwnedFd>,
    pub enforcement: Enforcement,
    /// Removed when the command is dropped.
    _dir: tempfile::TempDir,
}

impl Running {
    /// Stops the whole command at once.
    pub fn kill(&self) {
        if self.pgid > 0 {
            // SAFETY: signals the command's own process group.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

/// The kubeconfig of one command: this gateway's shell port, its CA, the command's token.
pub fn kubeconfig(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // JSON is YAML: every value is quoted by serde, whatever it holds.
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ztk", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "ztk", "user": {"token": token}}],
        "contexts": [{"name": "ztk", "context": {"cluster": "ztk", "user": "ztk", "namespace": namespace}}],
        "current-context": "ztk",
    })
    .to_string()
}

/// What kubectl may read: its own directory and the system's libraries (kubectl is usually
/// static, but a packaged one may not be). Not /etc, not /home, not the gateway's data.
fn readable(kubectl: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
        "/etc/ld.so.cache",
        "/dev/null",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for p in [
        kubectl.to_path_buf(),
        std::fs::canonicalize(kubectl).unwrap_or_default(),
    ] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            paths.push(dir.to_path_buf());
        }
    }
    paths
}

pub fn spawn(spec: Spec) -> Result<Running, RunError> {
    let dir_err = |source| RunError::Dir {
        dir: spec.parent_dir.to_path_buf(),
        source,
    };
    crate::fsutil::create_private_dir(spec.parent_dir).map_err(dir_err)?;
    let dir = tempfile::Builder::new()
        .prefix("cmd-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(spec.parent_dir)
        .map_err(dir_err)?;
    let kube = dir.path().join(".kube");
    crate::fsutil::create_private_dir(&kube).map_err(dir_err)?;
    let config = kube.join("config");
    let mut file = crate::fsutil::private_options()
        .write(true)
        .create_new(true)
        .open(&config)
        .map_err(dir_err)?;
    file.write_all(kubeconfig(spec.server, spec.ca_pem, spec.token, spec.namespace).as_bytes())
        .map_err(dir_err)?;
    drop(file);

    let pty = pty::open(spec.cols, spec.rows).map_err(RunError::Pty)?;
    let terminal = |pty: &pty::Pty| -> Result<Stdio, RunError> {
        Ok(Stdio::from(pty.slave.try_clone().map_err(RunError::Pty)?))
    };
    let mut cmd = tokio::process::Command::new(spec.kubectl);
    cmd.arg(format!("--cache-dir={}", kube.join("cache").display()))
        .args(spec.args)
        .env_clear()
        .env("HOME", dir.path())
        .env("TERM", "xterm-256color")
        .env("LANG", "C.UTF-8")
        .current_dir(dir.path())
        .stdout(terminal(&pty)?)
        .stderr(terminal(&pty)?)
        .kill_on_drop(true);
    if spec.stdin.is_some() {
        cmd.stdin(Stdio::piped());
    } else {
        cmd.stdin(terminal(&pty)?);
    }
    let enforcement = confine::confine(
        cmd.as_std_mut(),
        &Confinement {
            read_only: readable(spec.kubectl),
            read_write: vec![dir.path().to_path_buf()],
            connect_port: Some(spec.connect_port),
            limits: spec.limits,
        },
    )?;
    // SAFETY: `take_terminal` only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(pty::take_terminal);
    }
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        kubectl: spec.kubectl.to_path_buf(),
        source,
    })?;
    let pty::Pty { master, slave } = pty;
    // Only the child holds the terminal side now: reading ends when the command does.
    drop(slave);
    if let (Some(manifest), Some(mut stdin)) = (spec.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = stdin.write_all(&manifest).await;
        });
    }
    Ok(Running {
        pgid: child.id().map_or(0, |p| p as i32),
        child,
        terminal: master,
        enforcement,
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `kubectl ARGS` the way the shell does and returns (exit code, terminal output).
    async fn run_kubectl(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, usize) {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::Ca::generate("test").unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let parent = dir.path().join("shell");
        let mut running = spawn(Spec {
            kubectl: Path::new("/usr/bin/kubectl"),
            args: &args,
            parent_dir: &parent,
            server: "https://127.0.0.1:9/k8s/x",
            ca_pem: &ca.cert_pem(),
            token: "ztks_test",
            namespace: "dev",
            connect_port: 9,
            limits: Limits::default(),
            stdin: stdin.map(|s| s.as_bytes().to_vec()),
            cols: 100,
            rows: 30,
        })
        .unwrap();
        assert_eq!(running.enforcement, Enforcement::Full);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = pty::read(&running.terminal, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let status = running.child.wait().await.unwrap();
        drop(running);
        let left = std::fs::read_dir(&parent).unwrap().count();
        (
            status.code(),
            String::from_utf8_lossy(&out).into_owned(),
            left,
        )
    }

    #[tokio::test]
    async fn kubectl_runs_under_the_shells_rules_and_leaves_nothing() {
        let (code, out, left) = run_kubectl(&["version", "--client"], None).await;
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("Client Version"), "{out}");
        // The terminal turns newlines into CRLF, as a terminal does.
        assert!(out.contains("\r\n"), "{out:?}");
        // The command's directory went with it.
        assert_eq!(left, 0);
        // Its kubeconfig is what kubectl uses (the namespace and server from it), and the
        // server is the only one it may reach: nothing listens on port 9, so it fails to
        // connect rather than being refused by Landlock.
        let (code, out, _) = run_kubectl(
            &[
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.contexts[0].context.namespace} {.clusters[0].cluster.server}",
            ],
            None,
        )
        .await;
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("dev https://127.0.0.1:9/k8s/x"), "{out}");
        let (code, out, _) = run_kubectl(&["get", "pods", "--request-timeout=2s"], None).await;
        assert_ne!(code, Some(0));
        assert!(
            out.contains("connection refused") || out.contains("connect:"),
            "{out}"
        );
    }

    #[test]
    fn the_kubeconfig_quotes_every_value() {
        let text = kubeconfig("https://127.0.0.1:1/k8s/a\"b", "CA", "ztks_t", "dev");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:1/k8s/a\"b"
        );
        assert_eq!(v["users"][0]["user"]["token"], "ztks_t");
    }
}
