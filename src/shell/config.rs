//! `[shell]` in gateway.toml: whether the web shell runs, which kubectl, and its limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::confine::Limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShell {
    enabled: bool,
    kubectl: Option<PathBuf>,
    max_per_user: usize,
    max_total: usize,
    idle_timeout: String,
    command_timeout: String,
    cpu_seconds: u64,
    memory_mb: u64,
    open_files: u64,
}

impl Default for RawShell {
    fn default() -> RawShell {
        let d = ShellConfig::default();
        RawShell {
            enabled: d.enabled,
            kubectl: None,
            max_per_user: d.max_per_user,
            max_total: d.max_total,
            idle_timeout: "15m".into(),
            command_timeout: "5m".into(),
            cpu_seconds: d.limits.cpu_seconds,
            memory_mb: d.limits.memory_bytes >> 20,
            open_files: d.limits.open_files,
        }
    }
}

/// The web shell's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    pub enabled: bool,
    /// The kubectl the shell runs (`shell.kubectl`); None: the one on PATH, found at start.
    pub kubectl: Option<PathBuf>,
    /// Shells one user may have open at once.
    pub max_per_user: usize,
    /// Shells open at once on this gateway.
    pub max_total: usize,
    /// A shell with no keystroke and no output this long closes (its command is stopped).
    pub idle_timeout: Duration,
    /// A command that is not interactive (not `exec -it`, `attach`, `logs -f`, `get -w`) is
    /// stopped after this long.
    pub command_timeout: Duration,
    pub limits: Limits,
}

impl Default for ShellConfig {
    fn default() -> ShellConfig {
        ShellConfig {
            enabled: true,
            kubectl: None,
            max_per_user: 3,
            max_total: 32,
            idle_timeout: Duration::from_secs(15 * 60),
            command_timeout: Duration::from_secs(5 * 60),
            limits: Limits::default(),
        }
    }
}

impl RawShell {
    /// Validates the section; `base` resolves a relative `kubectl` path (the config's dir).
    pub fn validate(self, base: &Path) -> Result<ShellConfig, String> {
        let duration = |key: &str, value: &str| {
            crate::audit::filter::parse_duration_us(value)
                .ok()
                .filter(|us| *us >= 1_000_000)
                .map(|us| Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    format!("key `shell.{key}`: {value:?} is not a duration of at least 1s, like 15m or 30s")
                })
        };
        if self.max_per_user == 0 || self.max_total == 0 {
            return Err(
                "keys `shell.max_per_user` and `shell.max_total`: at least 1 (turn the shell off with `shell.enabled = false`)".into(),
            );
        }
        if self.memory_mb != 0 && self.memory_mb < 128 {
            return Err("key `shell.memory_mb`: at least 128 (kubectl needs about 60 MiB), or 0 for no limit".into());
        }
        if self.open_files != 0 && self.open_files < 32 {
            return Err("key `shell.open_files`: at least 32, or 0 for no limit".into());
        }
        Ok(ShellConfig {
            enabled: self.enabled,
            kubectl: self.kubectl.map(|p| {
                if p.is_relative() && p.components().count() > 1 {
                    base.join(p)
                } else {
                    p
                }
            }),
            max_per_user: self.max_per_user,
            max_total: self.max_total,
            idle_timeout: duration("idle_timeout", &self.idle_timeout)?,
            command_timeout: duration("command_timeout", &self.command_timeout)?,
            limits: Limits {
                cpu_seconds: self.cpu_seconds,
                memory_bytes: self.memory_mb << 20,
                open_files: self.open_files,
                ..Limits::default()
            },
        })
    }
}

/// Finds the kubectl the shell runs: the configured one (an absolute path, or a name looked
/// up on PATH), or `kubectl` on PATH.
pub fn find_kubectl(configured: Option<&Path>) -> Result<PathBuf, String> {
    let wanted = configured.unwrap_or(Path::new("kubectl"));
    if wanted.components().count() > 1 {
        return match std::fs::metadata(wanted) {
            Ok(m) if m.is_file() => Ok(wanted.to_path_buf()),
            _ => Err(format!("shell.kubectl {} is not a file", wanted.display())),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(wanted);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{} is not on PATH; install kubectl or set shell.kubectl in gateway.toml",
        wanted.display()
    ))
}

/// A duration as configured: `15m`, `90s`, `2h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
