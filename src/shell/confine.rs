//! What a web-shell command may do on the gateway's host, enforced on the child process before
//! it runs kubectl: resource limits (CPU seconds, memory, open files, processes),
//! `no_new_privs`, and, where the kernel has Landlock, a ruleset: read-only access below the
//! paths kubectl needs, read-write only below its own temp dir, and (Landlock ABI 4+) TCP
//! connections only to the gateway's own port. Where Landlock is missing, the limits,
//! `no_new_privs`, the empty environment and the refused flags (`shell::line`) still hold, and
//! `Enforcement` says so.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

use landlock::{
    Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("could not build the shell's Landlock ruleset: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("could not open {path} for the shell's Landlock ruleset: {source}")]
    Path {
        path: PathBuf,
        source: landlock::PathFdError,
    },
}

/// Resource limits of one command (0: unlimited). `processes` bounds the processes and threads
/// of the gateway's user as a whole (the kernel counts them per user, and not for root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cpu_seconds: 60,
            memory_bytes: 1 << 30,
            open_files: 256,
            // RLIMIT_NPROC counts every process and thread of the user, the gateway's own
            // and other shells' kubectl (a Go program: about ten threads) included.
            processes: 1024,
        }
    }
}

/// What the child may reach.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Readable (and executable) below these paths; missing ones are skipped.
    pub read_only: Vec<PathBuf>,
    /// Readable and writable below these paths.
    pub read_write: Vec<PathBuf>,
    /// The only TCP port the child may connect to (None: no restriction on connections).
    pub connect_port: Option<u16>,
    pub limits: Limits,
}

/// How much of the confinement the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Landlock with every rule asked for (files and network).
    Full,
    /// Landlock without some of the rules (an older ABI: no network rules before 4).
    Partial,
    /// No Landlock on this kernel: limits and no_new_privs only.
    LimitsOnly,
}

/// The Landlock ABI the rules are written for (TCP rules came with 4).
const TARGET: ABI = ABI::V4;

/// Prepares `cmd` so that its child is confined before it executes. The ruleset is built here,
/// in the parent; the child only applies limits and calls `landlock_restrict_self`.
pub fn confine(
    cmd: &mut std::process::Command,
    c: &Confinement,
) -> Result<Enforcement, ConfineError> {
    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(TARGET))?;
    if c.connect_port.is_some() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
    }
    let mut created = ruleset.create()?;
    for path in &c.read_only {
        if !path.exists() {
            continue;
        }
        let fd = PathFd::new(path).map_err(|source| ConfineError::Path {
            path: path.clone(),
            source,
        })?;
        created = created.add_rule(PathBeneath::new(fd, AccessFs::from_read(TARGET)))?;
    }
    for path in &c.read_write {
        let fd = PathFd::new(path).map_err(|source| ConfineError::Path {
            path: path.clone(),
            source,
        })?;
        created = created.add_rule(PathBeneath::new(fd, AccessFs::from_all(TARGET)))?;
    }
    if let Some(port) = c.connect_port {
        created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    // Whether the kernel takes the rules is known only when they are applied (in the child):
    // ask the kernel for its ABI here, so that the answer is known before the command runs.
    let abi = landlock_abi();
    let enforcement = match abi {
        0 => Enforcement::LimitsOnly,
        v if v < 4 && c.connect_port.is_some() => Enforcement::Partial,
        _ => Enforcement::Full,
    };
    let ruleset = Mutex::new(Some(created));
    let limits = c.limits;
    // SAFETY: between fork and exec only async-signal-safe work: setrlimit, prctl and the
    // Landlock syscall (`restrict_self` allocates nothing on success), and an uncontended lock.
    unsafe {
        cmd.pre_exec(move || {
            set_limits(&limits)?;
            let taken = ruleset.lock().ok().and_then(|mut r| r.take());
            if let Some(rules) = taken {
                match rules.restrict_self() {
                    Ok(status) if status.ruleset == RulesetStatus::NotEnforced && abi > 0 => {
                        return Err(std::io::Error::other("Landlock was not enforced"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err(std::io::Error::other("Landlock restriction failed")),
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(enforcement)
}

/// The kernel's Landlock ABI version (0: none).
pub fn landlock_abi() -> i64 {
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

fn set_limits(l: &Limits) -> std::io::Result<()> {
    let set = |resource, value: u64| -> std::io::Result<()> {
        if value == 0 {
            return Ok(());
        }
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: a plain syscall on a valid struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_CPU, l.cpu_seconds)?;
    set(libc::RLIMIT_AS, l.memory_bytes)?;
    set(libc::RLIMIT_NOFILE, l.open_files)?;
    set(libc::RLIMIT_NPROC, l.processes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn system_dirs() -> Vec<PathBuf> {
        ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache"]
            .iter()
            .map(PathBuf::from)
            .collect()
    }

    fn run(c: &Confinement, script: &str) -> (bool, String) {
        let mut cmd = Command::new("/bin/bash");
        cmd.args(["-c", script]).env_clear();
        let enforcement = confine(&mut cmd, c).unwrap();
        assert_eq!(
            enforcement,
            Enforcement::Full,
            "this kind of machine has Landlock ABI 4+"
        );
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    #[test]
    fn a_confined_child_reads_only_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "the host's secret").unwrap();
        let c = Confinement {
            read_only: system_dirs(),
            read_write: vec![own.clone()],
            connect_port: None,
            limits: Limits::default(),
        };
        let (ok, out) = run(&c, &format!("cat {}", outside.display()));
        assert!(!ok && !out.contains("the host's secret"), "{out}");
        assert!(out.contains("Permission denied"), "{out}");
        let (ok, out) = run(&c, "cat /etc/passwd");
        assert!(!ok && !out.contains("root:"), "{out}");
        let file = own.join("f");
        let (ok, out) = run(&c, &format!("echo hello > {0} && cat {0}", file.display()));
        assert!(ok && out.contains("hello"), "{out}");
        let (ok, out) = run(&c, &format!("echo x > {}/escaped", dir.path().display()));
        assert!(!ok, "{out}");
    }

    #[test]
    fn a_confined_child_connects_only_to_its_port() {
        let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, o) = (
            allowed.local_addr().unwrap().port(),
            other.local_addr().unwrap().port(),
        );
        let c = Confinement {
            read_only: system_dirs(),
            read_write: vec![],
            connect_port: Some(a),
            limits: Limits::default(),
        };
        let (ok, out) = run(&c, &format!("exec 3<>/dev/tcp/127.0.0.1/{a}"));
        assert!(ok, "{out}");
        let (ok, out) = run(&c, &format!("exec 3<>/dev/tcp/127.0.0.1/{o}"));
        assert!(!ok && out.contains("Permission denied"), "{out}");
    }

    /// The real kubectl (the machine's dispatcher and the version it runs) works inside the
    /// confinement the shell gives it: system paths read-only, its home read-write.
    #[test]
    fn kubectl_runs_confined() {
        let home = tempfile::tempdir().unwrap();
        let mut read_only = system_dirs();
        read_only.extend(["/proc", "/sys/kernel/mm", "/etc/ssl", "/dev/null"].map(PathBuf::from));
        let c = Confinement {
            read_only,
            read_write: vec![home.path().to_path_buf()],
            connect_port: Some(1),
            limits: Limits::default(),
        };
        let mut cmd = Command::new("/usr/bin/kubectl");
        cmd.args(["version", "--client", "--output=json"])
            .env_clear()
            .env("HOME", home.path());
        assert_eq!(confine(&mut cmd, &c).unwrap(), Enforcement::Full);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("clientVersion"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn limits_hold_in_the_child() {
        let c = Confinement {
            read_only: system_dirs(),
            read_write: vec![],
            connect_port: None,
            limits: Limits {
                open_files: 32,
                ..Limits::default()
            },
        };
        let (ok, out) = run(&c, "ulimit -n; ulimit -t");
        assert!(ok, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["32", "60"], "{out}");
    }
}
