//! `ztk proxy`: the persistent loopback proxy behind the kubeconfig from `ztk kubeconfig`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::audit::model::now_us;
use crate::audit::{AuditSink, AuditStore};
use crate::client::config::Paths;
use crate::client::credential::CredentialKey;
use crate::client::daemon::{DaemonError, ProxyFiles};
use crate::client::proxy::{Access, LocalProxy, ProxyContext, SessionSource};

/// Run the persistent local proxy that kubeconfigs from `ztk kubeconfig` point at (foreground).
///
/// `ztk credential` starts it in the background when it is not running; one runs per user. It
/// accepts only credentials that `ztk credential` issued to you, relays every call to the gateway
/// with your session, and records it with the command line of the kubectl that made it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Stop the running proxy.
    Stop,
    /// Show whether the proxy runs, its pid and port (exit code 3 when it does not run).
    Status,
}

/// How often command records are brought up to date (and shipping woken when calls were made).
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);
/// The same while calls keep coming: under load, shipping a quarter second's records at a time
/// spreads the work (here and at the gateway's ingest) instead of a burst every second, which
/// showed in the relayed calls' p99 (BENCHMARKS.md).
const ACTIVE_UPDATE_INTERVAL: Duration = Duration::from_millis(250);
/// How often the outbox is checked without activity (records other processes wrote).
const SHIP_INTERVAL: Duration = Duration::from_secs(10);

pub fn run(args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let files = ProxyFiles::new(&paths);
    match args.action {
        Some(Action::Stop) => {
            match files.stop()? {
                Some(pid) => println!("Stopped the ztk proxy (pid {pid})."),
                None => println!("The ztk proxy is not running."),
            }
            Ok(0)
        }
        Some(Action::Status) => match files.running()? {
            Some(pid) => {
                let port = files.port()?.map_or("?".into(), |p| p.to_string());
                println!("The ztk proxy is running: pid {pid}, https://127.0.0.1:{port}");
                Ok(0)
            }
            None => {
                println!("The ztk proxy is not running (the next kubectl using a ztk context starts it).");
                Ok(3)
            }
        },
        // One relay thread: one user's kubectl calls need no more, and it keeps the idle proxy small.
        None => crate::cli::block_on_workers(1, serve(paths, files)),
    }
}

async fn bind_configured(port: u16) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(DaemonError::PortTaken { port }.into())
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on 127.0.0.1:{port}")),
    }
}

async fn serve(paths: Paths, files: ProxyFiles) -> Result<i32> {
    if let Some(pid) = files.running()? {
        return Err(DaemonError::AlreadyRunning { pid }.into());
    }
    // Bind before taking the lock: a plugin treats "lock held and the port answers" as ready,
    // so the lock must never be held while someone else's program owns the port.
    let listener = match files.port()? {
        Some(port) => bind_configured(port).await?,
        None => {
            // No port yet: keep the one the kernel gives (no window in which another program
            // can take it), unless a proxy starting beside us recorded one first.
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .context("cannot open a loopback port")?;
            let port = listener.local_addr()?.port();
            match files.claim_port(port)? {
                true => listener,
                false => {
                    drop(listener);
                    bind_configured(files.port()?.ok_or(DaemonError::NoPort)?).await?
                }
            }
        }
    };
    let running = files.acquire()?;
    files.ensure_tls()?;
    let server_tls = crate::tls::server_config(
        &crate::tls::read_file(&files.cert_file())?,
        &crate::tls::read_file(&files.key_file())?,
    )?;
    let key = CredentialKey::load_or_create(&files.credential_key_file())?;
    let fail_closed = crate::client::config::ClientConfig::load(&paths)
        .ok()
        .flatten()
        .is_some_and(|c| c.audit.mode == crate::client::config::AuditMode::FailClosed);
    // A store that cannot be opened stops a fail-closed proxy here (kubectl then cannot connect);
    // a best-effort one serves with a warning in its log.
    let store = AuditStore::open(&paths.audit_db());
    let store = match store {
        Ok(store) => store,
        Err(err) if fail_closed => return Err(err.into()),
        Err(err) => {
            eprintln!("ztk proxy: warning: {err}; serving without a local audit record");
            return serve_unrecorded(paths, key, listener, server_tls, running).await;
        }
    };
    let (sink, writer) = store.start_writer(4096)?;
    let ctx = Arc::new(
        ProxyContext::new(
            Access::Issued {
                key,
                session: Box::new(SessionSource::new(paths)),
            },
            sink.clone(),
        )
        .with_fail_closed(fail_closed),
    );
    let proxy = LocalProxy::serve(ctx.clone(), listener, server_tls, String::new());
    println!(
        "ztk proxy: listening on https://{} (pid {})",
        proxy.addr,
        std::process::id()
    );

    let wake = Arc::new(tokio::sync::Notify::new());
    let updater = {
        let (ctx, store, sink, wake) = (ctx.clone(), store.clone(), sink.clone(), wake.clone());
        tokio::spawn(async move {
            let mut last_retention = None;
            let mut calls_seen = 0;
            let mut active = false;
            loop {
                let interval = if active {
                    ACTIVE_UPDATE_INTERVAL
                } else {
                    UPDATE_INTERVAL
                };
                tokio::time::sleep(interval).await;
                let updated = update_commands(&ctx, &store, &sink).await;
                let calls = ctx.calls.load(std::sync::atomic::Ordering::Relaxed);
                active = updated || calls != calls_seen;
                if active {
                    // Calls without a command (other clients) count too; their records are
                    // committed by now or with the next round.
                    calls_seen = calls;
                    wake.notify_one();
                }
                apply_retention(&ctx, &store, &mut last_retention).await;
            }
        })
    };
    // Ships continuously: every 10 s, or at once after activity; backs off on failures.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shipping = {
        let ctx = ctx.clone();
        let login: crate::client::shipper::LoginSource = Arc::new(move || match &ctx.access {
            Access::Issued { session, .. } => session.session(),
            Access::Run { .. } => None,
        });
        tokio::spawn(crate::client::shipper::ship_continuously(
            store.clone(),
            login,
            SHIP_INTERVAL,
            wake.clone(),
            stop_rx,
        ))
    };
    wait_for_stop().await?;
    proxy.stop();
    updater.abort();
    ctx.wait_idle(Duration::from_secs(3)).await;
    update_commands(&ctx, &store, &sink).await;
    let _ = stop_tx.send(true);
    let _ = shipping.await;
    // The writer thread ends only with the last sink; flushing is what matters here.
    let flushed = tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(10))).await?;
    if !flushed {
        eprintln!("ztk proxy: warning: the local audit store did not confirm the last records");
    }
    drop(running);
    drop(writer);
    Ok(0)
}

/// Brings the records of commands that made calls up to date (calls so far, last activity as
/// their end: a plain kubectl does not tell ztk when it exits). True when records were written.
async fn update_commands(ctx: &ProxyContext, store: &AuditStore, sink: &AuditSink) -> bool {
    let activity = ctx.take_activity();
    if activity.is_empty() {
        return false;
    }
    let store2 = store.clone();
    let sink2 = sink.clone();
    tokio::task::spawn_blocking(move || {
        for (id, calls) in activity {
            match store2.command(id) {
                Ok(Some(mut command)) => {
                    command.api_calls += calls;
                    command.ended_us = Some(now_us());
                    sink2.record_command(command);
                }
                Ok(None) => tracing::warn!("no record of command {id}"),
                Err(err) => tracing::warn!("cannot read command {id}: {err}"),
            }
        }
        sink2.flush(Duration::from_secs(5))
    })
    .await
    .unwrap_or(false)
}

/// How often the persistent proxy applies the retention settings.
const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

async fn apply_retention(
    ctx: &ProxyContext,
    store: &AuditStore,
    last: &mut Option<tokio::time::Instant>,
) {
    if last.is_some_and(|t| t.elapsed() < RETENTION_INTERVAL) {
        return;
    }
    *last = Some(tokio::time::Instant::now());
    let Access::Issued { session, .. } = &ctx.access else {
        return;
    };
    let Some((config, _)) = session.session() else {
        return;
    };
    let policy = match config.audit.retention() {
        Ok(policy) => policy,
        Err(err) => {
            tracing::warn!("retention not applied: {err:#}");
            return;
        }
    };
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.apply_retention(&policy, now_us())).await {
        Ok(Ok(pruned)) if pruned.calls + pruned.commands > 0 => tracing::info!(
            "retention dropped {} shipped calls and {} commands",
            pruned.calls,
            pruned.commands
        ),
        Ok(Err(err)) => tracing::warn!("retention failed: {err}"),
        _ => {}
    }
}

/// Best-effort mode with a local store that cannot be opened: relay (the gateway still records
/// every call) and keep nothing locally.
async fn serve_unrecorded(
    paths: Paths,
    key: CredentialKey,
    listener: tokio::net::TcpListener,
    server_tls: Arc<rustls::ServerConfig>,
    running: impl Sized,
) -> Result<i32> {
    let (sink, writer) =
        crate::audit::store::failing_sink("the local audit store cannot be opened");
    let ctx = Arc::new(ProxyContext::new(
        Access::Issued {
            key,
            session: Box::new(SessionSource::new(paths)),
        },
        sink,
    ));
    let proxy = LocalProxy::serve(ctx, listener, server_tls, String::new());
    println!(
        "ztk proxy: listening on https://{} (pid {})",
        proxy.addr,
        std::process::id()
    );
    wait_for_stop().await?;
    proxy.stop();
    drop(running);
    drop(writer);
    Ok(0)
}

async fn wait_for_stop() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
