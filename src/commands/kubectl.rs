//! `ztk kubectl`: run the real kubectl through a loopback proxy that relays every API call to
//! the gateway and records it with this command line.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use rand::RngCore;
use uuid::Uuid;

use crate::audit::model::now_us;
use crate::audit::redact::{redact_argv, shell_join};
use crate::audit::store::StoreError;
use crate::audit::{AccessMethod, Command};
use crate::cli::UsageError;
use crate::client::api::GatewayApi;
use crate::client::config::{AuditMode, Paths};
use crate::client::proxy::{gateway_upstream, Access, LocalProxy, ProxyContext};
use crate::client::token::require_session;

/// Run kubectl through the gateway; every API call is audited with this command line.
#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct Args {
    /// The cluster to use (default: the one chosen at login, or the only one offered).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubectl binary to run.
    #[arg(
        long,
        env = "ZTK_KUBECTL",
        value_name = "PATH",
        default_value = "kubectl"
    )]
    pub kubectl: PathBuf,
    /// Arguments for kubectl, e.g. `get pods -A`.
    #[arg(allow_hyphen_values = true, value_name = "KUBECTL_ARGS")]
    pub args: Vec<String>,
}

/// kubectl flags that would send requests around the proxy.
const BYPASS_FLAGS: &[&str] = &["--kubeconfig", "--server", "-s"];

/// How long to wait, after kubectl exits, for records of calls still finishing.
const SHIP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shipping may hold up the exit; what is left goes with the next run or `ztk proxy`.
const SHIP_GRACE: Duration = Duration::from_secs(2);
/// How often the records of a running command are shipped.
const SHIP_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(args: Args) -> Result<i32> {
    if let Some(flag) = args.args.iter().find(|a| {
        BYPASS_FLAGS
            .iter()
            .any(|f| a == f || a.starts_with(&format!("{f}=")))
    }) {
        return Err(UsageError(format!(
            "`{flag}` would send kubectl around ztk; drop it (ztk chooses the server, use --cluster NAME to pick a cluster)"
        ))
        .into());
    }
    let started = std::time::Instant::now();
    let paths = Paths::from_env()?;
    let (mut config, token) = require_session(&paths)?;
    let roots = config.roots()?;
    let cluster = config.pick_cluster(args.cluster.as_deref())?;
    if !config.clusters.contains(&cluster) {
        // The list is from login time; ask the gateway before refusing.
        let api = GatewayApi::new(&config.gateway, &roots)?;
        let session = api
            .session(&token)
            .await
            .context("cannot check the clusters offered")?;
        config.clusters = session.clusters.into_iter().map(|c| c.name).collect();
        config.save(&paths)?;
        if !config.clusters.contains(&cluster) {
            anyhow::bail!(
                "the gateway offers no cluster {cluster:?}; it offers: {}",
                config.clusters.join(", ")
            );
        }
    }

    let argv = {
        let mut argv = vec!["kubectl".to_string()];
        argv.extend(args.args.iter().cloned());
        redact_argv(&argv)
    };
    let mut command = Command {
        id: Uuid::now_v7(),
        started_us: now_us(),
        ended_us: None,
        user: config.user.clone(),
        cluster: cluster.clone(),
        command_line: shell_join(&argv),
        argv,
        exit_code: None,
        api_calls: 0,
        access_method: AccessMethod::Cli,
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        host: crate::fsutil::hostname(),
        reason: String::new(),
    };
    // Within the gateway's limits, cut with a marker: the record always ships.
    command.fit();
    // The writer's thread opens the store and commits the command first, the proof that the
    // store takes writes at all. Fail-closed waits for that commit before kubectl starts (a
    // crash then still leaves the command in the log); best-effort starts kubectl meanwhile and
    // hears the answer while kubectl starts.
    let fail_closed = config.audit.mode == AuditMode::FailClosed;
    let db = paths.audit_db();
    let (sink, _writer, opened) = crate::audit::store::open_recording(&db, command.clone(), 4096);
    // The writer thread always answers, unless it died.
    let answer = || {
        opened.recv().unwrap_or_else(|_| {
            Err(StoreError::Output(
                "the audit writer stopped before it opened the store".into(),
            ))
        })
    };
    let mut store_opened = None;
    if fail_closed {
        match answer() {
            Ok(store) => store_opened = Some(store),
            Err(err) => anyhow::bail!(
                "{err}\nztk does not run kubectl without a local audit record ([audit] mode = \"fail-closed\" in {}); free disk space or make the store writable, then retry",
                paths.config_file().display()
            ),
        }
    }
    let secret = random_secret();
    let upstream = gateway_upstream(&config, &token, &cluster)?;
    // The records are shipped at exit over the connection kubectl's calls kept open.
    let gateway_client = upstream.h1_client();
    let ctx = Arc::new(
        ProxyContext::new(
            Access::Run {
                secret: secret.clone(),
                command_id: command.id,
                user: config.user.clone(),
                cluster: cluster.clone(),
                upstream: Box::new(upstream),
            },
            sink.clone(),
        )
        .with_fail_closed(fail_closed),
    );
    let proxy = LocalProxy::start(ctx.clone()).await?;

    // The run's kubeconfig holds only the per-run secret, in a 0700 dir removed at exit.
    let kubeconfig = crate::kubeconfig::single(
        &format!("ztk-{cluster}"),
        &format!("https://{}", proxy.addr),
        &proxy.ca_pem,
        crate::kubeconfig::User {
            token: Some(secret),
            ..Default::default()
        },
        None,
    );
    let (run_dir, kubeconfig_path) =
        write_run_dir(&paths, serde_yaml_ng::to_string(&kubeconfig)?.as_bytes())?;

    let cache_dir = run_dir.path().join("cache");
    link_discovery_cache(&paths, &cluster, &cache_dir, proxy.addr);

    let mut child = tokio::process::Command::new(&args.kubectl)
        .args(&args.args)
        .env("KUBECONFIG", &kubeconfig_path)
        .env("KUBECACHEDIR", &cache_dir)
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {}; install kubectl or point --kubectl (or ZTK_KUBECTL) at it",
                args.kubectl.display()
            )
        })?;
    tracing::debug!("kubectl started {:?} after ztk", started.elapsed());
    let store = match store_opened.map_or_else(answer, Ok) {
        Ok(store) => Some(store),
        Err(err) => {
            eprintln!(
                "ztk: warning: {err}; running kubectl anyway: the gateway still records every call, but this machine keeps no record of this command"
            );
            None
        }
    };
    tracing::debug!(
        "audit store answered {:?} after ztk started",
        started.elapsed()
    );
    // kubectl takes tens of milliseconds to send its first call: open the connection to the
    // gateway (TCP and TLS) meanwhile, so that call does not wait for the handshake. Any
    // answer will do; a refused login shows in kubectl's own call.
    if let Ok(api) = GatewayApi::with_client(&config.gateway, gateway_client.clone()) {
        let token = token.clone();
        tokio::spawn(async move {
            let _ = api.session(&token).await;
        });
    }
    if let Some(store) = store.clone() {
        // The writer took the connection that recorded the command.
        tokio::task::spawn_blocking(move || store.keep_spare());
    }
    // Ship in the background while kubectl runs (long commands: logs -f, port-forward).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = store.clone().map(|store| {
        let login = (config.clone(), token.clone());
        tokio::spawn(crate::client::shipper::ship_continuously(
            store,
            Arc::new(move || Some(login.clone())),
            SHIP_INTERVAL,
            Arc::new(tokio::sync::Notify::new()),
            stop_rx,
        ))
    });
    let status = wait_forwarding_signals(&mut child).await?;
    let exit_code = exit_code(&status);
    tracing::debug!("kubectl exited {:?} after ztk started", started.elapsed());

    ctx.wait_idle(SHIP_TIMEOUT).await;
    proxy.stop();
    command.ended_us = Some(now_us());
    command.exit_code = Some(exit_code);
    command.api_calls = ctx.calls.load(Ordering::Relaxed);
    sink.record_command(command);
    let flush_sink = sink.clone();
    let flushed =
        tokio::task::spawn_blocking(move || flush_sink.flush(Duration::from_secs(10))).await?;
    tracing::debug!("records flushed {:?} after ztk started", started.elapsed());
    let failed = sink.stats().failed.load(Ordering::Relaxed);
    if store.is_some() && (!flushed || failed > 0) {
        eprintln!(
            "ztk: warning: the local audit store {} did not take {} record(s) of this command",
            db.display(),
            if flushed {
                failed.to_string()
            } else {
                "all".into()
            }
        );
        if fail_closed && exit_code == 0 {
            drop(run_dir);
            return Ok(1);
        }
    }
    // The run directory (kubeconfig, kubectl's HTTP cache) goes while the records travel.
    let removing = tokio::task::spawn_blocking(move || drop(run_dir));
    let _ = stop_tx.send(true);
    if let Some(task) = background {
        let _ = task.await;
    }

    // Ship what is left, for a short grace period; the next run or `ztk proxy` ships the rest.
    if let Some(store) = store {
        let api = crate::client::api::GatewayApi::with_client(&config.gateway, gateway_client)?;
        let shipper =
            crate::client::shipper::Shipper::with_api(store.clone(), &config, &token, api);
        match tokio::time::timeout(SHIP_GRACE, shipper.ship_all(|_| {})).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                // After a 401 kubectl has already shown why (the gateway's Warning header).
                let unauthorized = err.chain().any(|e| {
                    matches!(
                        e.downcast_ref::<crate::client::api::ApiError>(),
                        Some(crate::client::api::ApiError::Status { code: 401, .. })
                    )
                });
                if !unauthorized {
                    eprintln!("ztk: warning: the audit records were not sent to the gateway ({err:#}); they are kept and sent later (`ztk audit status` shows them)");
                }
            }
            Err(_) => tracing::info!("audit shipping continues with the next run"),
        }
        tracing::debug!("records shipped {:?} after ztk started", started.elapsed());
        if let Ok(policy) = config.audit.retention() {
            let _ =
                tokio::task::spawn_blocking(move || store.apply_retention(&policy, now_us())).await;
        }
    }
    let _ = removing.await;
    Ok(exit_code)
}

/// Gives the run's kubectl the discovery cache of earlier runs on the same cluster. kubectl keys
/// its cache by server host and port, and the proxy's port changes every run: the run's cache
/// dir gets `discovery/127.0.0.1_PORT` linked to one kept directory per cluster, so kubectl
/// skips a cold discovery (about 100 ms) as it does against a cluster directly. Best effort:
/// without the link kubectl discovers afresh.
fn link_discovery_cache(
    paths: &Paths,
    cluster: &str,
    cache_dir: &std::path::Path,
    addr: std::net::SocketAddr,
) {
    if cluster.is_empty()
        || !cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || cluster.starts_with('.')
    {
        return;
    }
    let kept = paths.data_dir.join("kubectl-cache").join(cluster);
    let host_dir = cache_dir.join("discovery");
    let link = host_dir.join(format!("{}_{}", addr.ip(), addr.port()));
    let made = crate::fsutil::create_private_dir(&kept)
        .and_then(|_| crate::fsutil::create_private_dir(&host_dir));
    #[cfg(unix)]
    let linked = made.and_then(|_| std::os::unix::fs::symlink(&kept, &link));
    #[cfg(not(unix))]
    let linked = made.and_then(|_| Err::<(), _>(std::io::ErrorKind::Unsupported.into()));
    if let Err(err) = linked {
        tracing::debug!("no shared discovery cache for cluster {cluster}: {err}");
    }
}

/// Waits for kubectl. SIGINT and SIGTERM sent to ztk are passed on to kubectl (a Ctrl-C in a
/// terminal reaches both; a second copy is harmless) and ztk stays to record how it ended.
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> Result<std::process::ExitStatus> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            let forward = tokio::select! {
                status = child.wait() => return Ok(status?),
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
            };
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with a pid we own and a valid signal number.
                unsafe {
                    libc::kill(pid as libc::pid_t, forward);
                }
            }
        }
    }
    #[cfg(not(unix))]
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

/// A private run directory with the kubeconfig in it: in the data dir, or (when that cannot be
/// written: a full disk, a read-only home) in the system's temporary directory.
fn write_run_dir(paths: &Paths, kubeconfig: &[u8]) -> Result<(tempfile::TempDir, PathBuf)> {
    let attempt = |parent: &std::path::Path| -> Result<(tempfile::TempDir, PathBuf)> {
        crate::fsutil::create_private_dir(parent)?;
        let dir = crate::fsutil::private_tempdir_in(parent, "run-")?;
        let path = dir.path().join("kubeconfig");
        // Removed when the run ends: written once, without the fsync an atomic write costs.
        crate::fsutil::write_new_private(&path, kubeconfig)?;
        Ok((dir, path))
    };
    attempt(&paths.data_dir).or_else(|first| {
        attempt(&std::env::temp_dir()).with_context(|| {
            format!(
                "cannot create a run directory in {} ({first:#}) nor in the temporary directory",
                paths.data_dir.display()
            )
        })
    })
}

fn random_secret() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}
