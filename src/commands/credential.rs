//! `ztk credential`: the exec credential plugin of the kubeconfig written by `ztk kubeconfig`.
//!
//! kubectl runs it on every invocation, so it stays on a short synchronous path: no async
//! runtime, no network. It records the command of the kubectl that ran it (read from
//! `/proc/$PPID/cmdline`), makes sure the persistent proxy runs, and prints a credential tied to
//! that command. The session token stays with the proxy.

use std::path::Path;

use anyhow::{Context, Result};
use uuid::Uuid;

use crate::audit::model::now_us;
use crate::audit::redact::{redact_argv, shell_join};
use crate::audit::{AccessMethod, AuditStore, Command};
use crate::client::config::Paths;
use crate::client::credential::{CredentialKey, Format};
use crate::client::daemon::ProxyFiles;
use crate::client::token::require_session;

/// Print a credential for kubectl (the exec plugin of kubeconfigs from `ztk kubeconfig`).
///
/// Records the calling kubectl's command line, starts `ztk proxy` in the background when it is not
/// running, and prints an ExecCredential (client.authentication.k8s.io/v1) whose token only that
/// proxy accepts. Exits non-zero, saying why on stderr, when there is no valid login.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster kubectl is about to use.
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
}

/// A credential lives at most this long when the session has no known expiry.
const DEFAULT_LIFETIME_US: i64 = 12 * 3600 * 1_000_000;

pub fn run(args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (config, _token) = require_session(&paths)?;
    let files = ProxyFiles::new(&paths);
    let key = CredentialKey::load_or_create(&files.credential_key_file())?;
    let format = match files.running()? {
        Some(pid) => proxy_format(&files, pid),
        None => {
            let exe = std::env::current_exe().context("cannot find the ztk executable")?;
            files.start_background(&exe)?;
            // This ztk's proxy (or one that a plugin beside us started from the same kubeconfig).
            Format::V2
        }
    };

    let parent = Parent::read();
    let command_id = match parent.filter(Parent::is_kubectl) {
        Some(parent) => Some(record_command(&paths, &config.user, &args.cluster, parent)?),
        // Other clients (client libraries, k9s) are recorded per call, by user agent.
        None => None,
    };
    let now = now_us();
    let expires_us = if config.expires_us > now {
        config.expires_us
    } else {
        now + DEFAULT_LIFETIME_US
    };
    let credential = serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1",
        "spec": {},
        "status": {
            "token": key.issue_as(format, command_id, &args.cluster, expires_us),
            "expirationTimestamp": rfc3339(expires_us),
        }
    });
    println!("{credential}");
    Ok(0)
}

/// The credential format the running proxy accepts: the current one, unless the proxy is from
/// a ztk before it (still running after an upgrade), which would refuse it. That proxy gets the
/// old format, and the user a hint: it serves kubeconfig paths as before, but not `--raw`.
fn proxy_format(files: &ProxyFiles, pid: u32) -> Format {
    // Pid 0: a proxy that has its lock but has not written its pid yet, one started by a plugin
    // beside us a moment ago.
    if pid == 0 || files.accepts_current(pid) {
        return Format::V2;
    }
    eprintln!("{}", old_proxy_hint(pid));
    Format::V1
}

/// What to do about a running proxy from an older ztk.
pub fn old_proxy_hint(pid: u32) -> String {
    format!("ztk: the running ztk proxy (pid {pid}) is from an older ztk and cannot serve `kubectl get --raw` or clients that drop the server's path; run `ztk proxy stop` (the next kubectl starts this version's)")
}

/// The process that ran the plugin: kubectl, or another client.
struct Parent {
    argv: Vec<String>,
    cwd: String,
}

impl Parent {
    fn read() -> Option<Parent> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getppid cannot fail.
            let ppid = unsafe { libc::getppid() };
            let raw = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let cwd = std::fs::read_link(format!("/proc/{ppid}/cwd"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (!argv.is_empty()).then_some(Parent { argv, cwd })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// kubectl, or one of its versioned copies (`kubectl.1.27`).
    fn is_kubectl(&self) -> bool {
        Path::new(&self.argv[0])
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "kubectl" || n.starts_with("kubectl."))
    }
}

fn record_command(paths: &Paths, user: &str, cluster: &str, parent: Parent) -> Result<Uuid> {
    let mut argv = parent.argv;
    // Shown as `ztk kubectl` records it, whichever copy of kubectl ran.
    argv[0] = "kubectl".into();
    let argv = redact_argv(&argv);
    let mut command = Command {
        id: Uuid::now_v7(),
        started_us: now_us(),
        ended_us: None,
        user: user.to_string(),
        cluster: cluster.to_string(),
        command_line: shell_join(&argv),
        argv,
        exit_code: None,
        api_calls: 0,
        access_method: AccessMethod::Cli,
        cwd: parent.cwd,
        host: crate::fsutil::hostname(),
        reason: String::new(),
    };
    // Within the gateway's limits, cut with a marker: the record always ships.
    command.fit();
    let store = AuditStore::open(&paths.audit_db())?;
    store.upsert_commands(std::slice::from_ref(&command))?;
    Ok(command.id)
}

fn rfc3339(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(us / 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
