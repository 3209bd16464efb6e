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
use crate::audit::{AccessMethod, AuditStore, Command};
use crate::cli::UsageError;
use crate::client::api::GatewayApi;
use crate::client::config::Paths;
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

/// How long to wait, after kubectl exits, for records of calls still finishing and for the gateway
/// to take the command record.
const SHIP_TIMEOUT: Duration = Duration::from_secs(3);

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

    let store = AuditStore::open(&paths.audit_db())?;
    let (sink, _writer) = store.start_writer(4096)?;
    let mut argv = vec!["kubectl".to_string()];
    argv.extend(args.args.iter().cloned());
    let argv = redact_argv(&argv);
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
    };
    // Recorded before kubectl starts, so a crash still leaves the command in the log.
    sink.record_command(command.clone());

    let secret = random_secret();
    let ctx = Arc::new(ProxyContext::new(
        Access::Run {
            secret: secret.clone(),
            command_id: command.id,
            user: config.user.clone(),
            cluster: cluster.clone(),
            upstream: Box::new(gateway_upstream(&config, &token, &cluster)?),
        },
        sink.clone(),
    ));
    let proxy = LocalProxy::start(ctx.clone()).await?;

    // The run's kubeconfig holds only the per-run secret, in a 0700 dir removed at exit.
    crate::fsutil::create_private_dir(&paths.data_dir)?;
    let run_dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&paths.data_dir)
        .with_context(|| {
            format!(
                "cannot create a run directory in {}",
                paths.data_dir.display()
            )
        })?;
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
    let kubeconfig_path = run_dir.path().join("kubeconfig");
    crate::fsutil::write_private(
        &kubeconfig_path,
        serde_yaml_ng::to_string(&kubeconfig)?.as_bytes(),
    )?;

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
    let status = wait_forwarding_signals(&mut child).await?;
    let exit_code = exit_code(&status);

    ctx.wait_idle(SHIP_TIMEOUT).await;
    proxy.stop();
    command.ended_us = Some(now_us());
    command.exit_code = Some(exit_code);
    command.api_calls = ctx.calls.load(Ordering::Relaxed);
    sink.record_command(command);
    let flushed = tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(10))).await?;
    if !flushed {
        eprintln!(
            "ztk: warning: the local audit store did not confirm the records of this command"
        );
    }
    drop(run_dir);

    let api = GatewayApi::new(&config.gateway, &roots)?.with_timeout(SHIP_TIMEOUT);
    if let Err(err) = crate::client::shipper::ship_commands(&store, &api, &token).await {
        // After a 401 kubectl has already shown why (the gateway's Warning header).
        let unauthorized = matches!(
            err.downcast_ref::<crate::client::api::ApiError>(),
            Some(crate::client::api::ApiError::Status { code: 401, .. })
        );
        if !unauthorized {
            eprintln!("ztk: warning: the command record was not sent to the gateway ({err:#}); it is kept and sent with a later command");
        }
    }
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
    let made =
        crate::fsutil::create_private_dir(&kept).and_then(|_| std::fs::create_dir_all(&host_dir));
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
