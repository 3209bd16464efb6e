//! `ztk proxy`: the persistent loopback proxy behind the kubeconfig from `ztk kubeconfig`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::audit::model::now_us;
use crate::audit::{AuditSink, AuditStore};
use crate::client::api::GatewayApi;
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

/// How often command records are brought up to date and shipped to the gateway.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

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
        None => crate::cli::block_on(serve(paths, files)),
    }
}

async fn serve(paths: Paths, files: ProxyFiles) -> Result<i32> {
    if let Some(pid) = files.running()? {
        return Err(DaemonError::AlreadyRunning { pid }.into());
    }
    let port = files.ensure_port(None)?;
    // Bind before taking the lock: a plugin treats "lock held and the port answers" as ready,
    // so the lock must never be held while someone else's program owns the port.
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(DaemonError::PortTaken { port }.into())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on 127.0.0.1:{port}")),
    };
    let running = files.acquire()?;
    files.ensure_tls()?;
    let server_tls = crate::tls::server_config(
        &crate::tls::read_file(&files.cert_file())?,
        &crate::tls::read_file(&files.key_file())?,
    )?;
    let key = CredentialKey::load_or_create(&files.credential_key_file())?;
    let store = AuditStore::open(&paths.audit_db())?;
    let (sink, writer) = store.start_writer(4096)?;
    let ctx = Arc::new(ProxyContext::new(
        Access::Issued {
            key,
            session: Box::new(SessionSource::new(paths)),
        },
        sink.clone(),
    ));
    let proxy = LocalProxy::serve(ctx.clone(), listener, server_tls, String::new());
    println!(
        "ztk proxy: listening on https://{} (pid {})",
        proxy.addr,
        std::process::id()
    );

    let updater = {
        let (ctx, store, sink) = (ctx.clone(), store.clone(), sink.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPDATE_INTERVAL).await;
                update_commands(&ctx, &store, &sink).await;
            }
        })
    };
    wait_for_stop().await?;
    proxy.stop();
    updater.abort();
    ctx.wait_idle(Duration::from_secs(3)).await;
    update_commands(&ctx, &store, &sink).await;
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
/// their end: a plain kubectl does not tell ztk when it exits) and ships them to the gateway.
async fn update_commands(ctx: &ProxyContext, store: &AuditStore, sink: &AuditSink) {
    let activity = ctx.take_activity();
    if activity.is_empty() {
        return;
    }
    let store2 = store.clone();
    let sink2 = sink.clone();
    let updated = tokio::task::spawn_blocking(move || {
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
    .unwrap_or(false);
    if !updated {
        return;
    }
    let Access::Issued { session, .. } = &ctx.access else {
        return;
    };
    let Some((config, token)) = session.session() else {
        return;
    };
    let shipped = async {
        let api = GatewayApi::new(&config.gateway, &config.roots()?)?
            .with_timeout(Duration::from_secs(5));
        crate::client::shipper::ship_commands(store, &api, &token).await
    };
    if let Err(err) = shipped.await {
        tracing::warn!("command records not sent to the gateway yet: {err:#}");
    }
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
