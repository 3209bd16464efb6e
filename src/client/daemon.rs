//! The persistent proxy's files and lifecycle: its fixed port, its TLS identity, the lock that
//! makes it one per user, its pid file, and starting it in the background.
//!
//! Everything lives in `$ZTK_DATA_DIR/proxy/`. The port and the CA must outlive the process:
//! the kubeconfig written by `ztk kubeconfig` names both.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::config::Paths;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the ztk proxy is already running (pid {pid})")]
    AlreadyRunning { pid: u32 },
    #[error("port {port} on 127.0.0.1 is taken by another program; pick another with `ztk kubeconfig --port N` (and use the new kubeconfig)")]
    PortTaken { port: u16 },
    #[error("the ztk proxy did not start: {0}")]
    StartFailed(String),
    #[error("no proxy port is configured; run `ztk kubeconfig` first")]
    NoPort,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// The persistent proxy's state directory.
pub struct ProxyFiles {
    dir: PathBuf,
}

/// Held for the proxy's lifetime: the lock file stays locked and the pid file names us.
pub struct Running {
    _lock: File,
    pid_file: PathBuf,
    formats_file: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.formats_file);
    }
}

/// The credential formats this build's proxy accepts, as it announces them in its formats file
/// (`PID ztk1 ztk2`). A proxy from before `ztk2` writes no such file.
const FORMATS: &str = "ztk1 ztk2";

impl ProxyFiles {
    pub fn new(paths: &Paths) -> ProxyFiles {
        ProxyFiles {
            dir: paths.data_dir.join("proxy"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    fn port_file(&self) -> PathBuf {
        self.dir.join("port")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    pub fn credential_key_file(&self) -> PathBuf {
        self.dir.join("credential-key")
    }
    fn lock_file(&self) -> PathBuf {
        self.dir.join("proxy.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("proxy.pid")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }
    /// Written by a running proxy: its pid and the credential formats it accepts.
    fn formats_file(&self) -> PathBuf {
        self.dir.join("proxy.formats")
    }

    /// Whether the proxy running as `pid` accepts credentials that name their cluster (`ztk2`).
    /// A proxy started by an older ztk (still running after an upgrade) does not: it announces
    /// nothing, and any formats file left there names another pid.
    pub fn accepts_current(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.formats_file()) else {
            return false;
        };
        let mut words = text.split_whitespace();
        words.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) && words.any(|w| w == "ztk2")
    }

    fn create_dir(&self) -> Result<(), DaemonError> {
        crate::fsutil::create_private_dir(&self.dir).map_err(io("cannot create", &self.dir))
    }

    /// The configured port, if `ztk kubeconfig` chose one.
    pub fn port(&self) -> Result<Option<u16>, DaemonError> {
        let path = self.port_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Sets the port to `asked`, or keeps the configured one, or picks a free one.
    pub fn ensure_port(&self, asked: Option<u16>) -> Result<u16, DaemonError> {
        let port = match (asked, self.port()?) {
            (Some(port), _) => port,
            (None, Some(port)) => return Ok(port),
            (None, None) => {
                // Asking the kernel for a free port once; it stays ours by convention afterwards.
                let probe = std::net::TcpListener::bind("127.0.0.1:0")
                    .map_err(io("cannot open a loopback port", Path::new("127.0.0.1:0")))?;
                probe
                    .local_addr()
                    .map_err(io("cannot read the address of", Path::new("127.0.0.1:0")))?
                    .port()
            }
        };
        self.create_dir()?;
        let path = self.port_file();
        crate::fsutil::write_private(&path, format!("{port}\n").as_bytes())
            .map_err(io("cannot write", &path))?;
        Ok(port)
    }

    /// Records `port` as the proxy's port unless one is recorded already (another proxy
    /// starting at the same moment); true when it is now ours.
    pub fn claim_port(&self, port: u16) -> Result<bool, DaemonError> {
        self.create_dir()?;
        let path = self.port_file();
        let mut file = match crate::fsutil::private_options()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("cannot create", &path)(e)),
        };
        use std::io::Write as _;
        file.write_all(format!("{port}\n").as_bytes())
            .map_err(io("cannot write", &path))?;
        Ok(true)
    }

    /// The proxy's CA (PEM), creating the CA and the server certificate on first use. The CA's
    /// key is not kept: nothing but this one certificate is ever issued with it.
    pub fn ensure_tls(&self) -> Result<String, DaemonError> {
        let (ca, cert, key) = (self.ca_file(), self.cert_file(), self.key_file());
        if let (Ok(ca_pem), true, true) =
            (std::fs::read_to_string(&ca), cert.exists(), key.exists())
        {
            return Ok(ca_pem);
        }
        self.create_dir()?;
        let authority = crate::tls::Ca::generate("ztk persistent proxy CA")?;
        let leaf = authority.issue_server(&["127.0.0.1".into(), "localhost".into()])?;
        crate::fsutil::write_private(&key, leaf.key_pem.as_bytes())
            .map_err(io("cannot write", &key))?;
        crate::fsutil::write_private(&cert, leaf.cert_pem.as_bytes())
            .map_err(io("cannot write", &cert))?;
        let ca_pem = authority.cert_pem();
        crate::fsutil::write_private(&ca, ca_pem.as_bytes()).map_err(io("cannot write", &ca))?;
        Ok(ca_pem)
    }

    fn open_lock(&self) -> Result<File, DaemonError> {
        self.create_dir()?;
        let path = self.lock_file();
        crate::fsutil::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))
    }

    /// The pid of the running proxy, or None. The lock decides, not the pid file: a pid file
    /// left by a proxy that was killed is stale and ignored.
    pub fn running(&self) -> Result<Option<u32>, DaemonError> {
        if !self.lock_file().exists() {
            return Ok(None);
        }
        let lock = self.open_lock()?;
        if !held_by_proxy(&lock) {
            return Ok(None);
        }
        Ok(Some(self.read_pid().unwrap_or(0)))
    }

    fn read_pid(&self) -> Option<u32> {
        let mut text = String::new();
        File::open(self.pid_file())
            .ok()?
            .read_to_string(&mut text)
            .ok()?;
        text.trim().parse().ok()
    }

    /// Takes the lock and writes the pid file, for the proxy process itself.
    pub fn acquire(&self) -> Result<Running, DaemonError> {
        let lock = self.open_lock()?;
        // `running()` takes a shared lock for an instant to probe: retry briefly so a probe
        // (a plugin waiting for us to start) is not mistaken for a running proxy.
        let deadline = Instant::now() + Duration::from_millis(300);
        while !try_lock(&lock) {
            if Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            return Err(DaemonError::AlreadyRunning {
                pid: self.read_pid().unwrap_or(0),
            });
        }
        // The formats before the pid: whoever reads our pid can read what we accept.
        let formats_file = self.formats_file();
        let formats = format!("{} {FORMATS}\n", std::process::id());
        crate::fsutil::write_private(&formats_file, formats.as_bytes())
            .map_err(io("cannot write", &formats_file))?;
        let pid_file = self.pid_file();
        let mut file = crate::fsutil::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&pid_file)
            .map_err(io("cannot write", &pid_file))?;
        writeln!(file, "{}", std::process::id()).map_err(io("cannot write", &pid_file))?;
        Ok(Running {
            _lock: lock,
            pid_file,
            formats_file,
        })
    }

    /// Starts `exe proxy` detached (own session, output to the log file) and waits until it
    /// accepts connections.
    pub fn start_background(&self, exe: &Path) -> Result<u32, DaemonError> {
        let port = self.port()?.ok_or(DaemonError::NoPort)?;
        self.create_dir()?;
        // kubectl may run several plugins at once (parallel discovery): one starts the proxy
        // while the others wait here, then find it running (or try again themselves if it
        // failed), instead of racing for the proxy's lock and reporting that race as an error.
        let start_path = self.dir.join("start.lock");
        let start_lock = crate::fsutil::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&start_path)
            .map_err(io("cannot open", &start_path))?;
        lock_blocking(&start_lock);
        if let Some(pid) = self.running()? {
            return Ok(pid);
        }
        let log_path = self.log_file();
        let log = crate::fsutil::private_options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("cannot open", &log_path))?;
        // A log from an older ztk may be 0644: the proxy's messages name users and clusters.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = log.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("proxy")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe; the proxy must not die with the terminal or
            // get the signals meant for kubectl's process group.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(io("cannot start", exe))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = self.running()? {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    // Reaped by nobody: the proxy outlives us, and init adopts it.
                    std::mem::forget(child);
                    return Ok(pid);
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Another plugin may have won the race to start it.
                if let Some(pid) = self.running()? {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return Ok(pid);
                    }
                }
                let log = std::fs::read(&log_path).unwrap_or_default();
                let tail = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..])
                    .trim()
                    .to_string();
                return Err(DaemonError::StartFailed(if tail.is_empty() {
                    format!("it exited with {status}")
                } else {
                    tail
                }));
            }
            if Instant::now() > deadline {
                return Err(DaemonError::StartFailed(format!(
                    "it did not accept connections on {addr} within 10 s; see {}",
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the running proxy (SIGTERM, then waits for its lock to be released).
    /// Returns the pid stopped, or None when none was running.
    pub fn stop(&self) -> Result<Option<u32>, DaemonError> {
        let Some(pid) = self.running()? else {
            // A pid file without a lock holder is stale: tidy it away.
            let _ = std::fs::remove_file(self.pid_file());
            return Ok(None);
        };
        if pid == 0 {
            return Err(DaemonError::StartFailed(
                "the proxy holds its lock but wrote no pid file; stop it by hand".into(),
            ));
        }
        // SAFETY: kill(2) with a pid read from our own pid file, whose lock proves it is live.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running()?.is_some() {
            if Instant::now() > deadline {
                return Err(DaemonError::StartFailed(format!(
                    "the proxy (pid {pid}) did not stop within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(pid))
    }
}

/// Takes an exclusive lock, waiting for it (released with the file).
fn lock_blocking(file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        unsafe {
            libc::flock(file.as_raw_fd(), libc::LOCK_EX);
        }
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// Tries to take an exclusive lock without waiting; true when taken (released with the file).
/// Only a proxy holds it.
fn try_lock(file: &File) -> bool {
    try_flock(file, true)
}

/// Whether a proxy holds the lock: a shared lock can be had unless someone holds it
/// exclusively. Probes never take it exclusively, so two plugins probing at the same moment
/// cannot mistake each other for a running proxy.
fn held_by_proxy(file: &File) -> bool {
    !try_flock(file, false)
}

fn try_flock(file: &File, exclusive: bool) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let kind = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a file descriptor we own.
        unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, exclusive);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_proxy_announces_the_formats_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: dir.path().join("config"),
            data_dir: dir.path().join("data"),
        };
        let files = ProxyFiles::new(&paths);
        let me = std::process::id();
        assert!(!files.accepts_current(me), "nothing announced yet");
        let running = files.acquire().unwrap();
        assert!(files.accepts_current(me));
        // A file left by another proxy names another pid: the running one is not that one.
        assert!(!files.accepts_current(me + 1));
        drop(running);
        assert!(!files.accepts_current(me));
        // A proxy from before `ztk2` wrote only its pid file.
        std::fs::write(files.formats_file(), format!("{me} ztk1\n")).unwrap();
        assert!(!files.accepts_current(me));
    }
}
