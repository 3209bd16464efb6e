//! The command line: one subcommand per file under `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// Zero-trust kubectl access with a complete audit trail.
///
/// Users log in to a ztk gateway and run kubectl through ztk; every API call is relayed through
/// the gateway and recorded, on both sides, together with the command line that caused it.
#[derive(Debug, Parser)]
#[command(name = "ztk", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Login(commands::login::Args),
    Logout(commands::logout::Args),
    Status(commands::status::Args),
    Kubectl(commands::kubectl::Args),
    Kubeconfig(commands::kubeconfig::Args),
    Credential(commands::credential::Args),
    Proxy(commands::proxy::Args),
    Audit(commands::audit::Args),
    Access(commands::access::Args),
    Gateway(commands::gateway::Args),
    Agent(commands::agent::Args),
    Demo(commands::demo::Args),
    Sandbox(commands::sandbox::Args),
    Completions(commands::completions::Args),
    #[command(hide = true)]
    Man(commands::man::Args),
}

/// A mistake in how ztk was called (exit code 2, like clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    crate::tls::install_crypto_provider();
    // The agent runs unattended: its connects, enrollments and renewals are worth a line each.
    init_logging(if matches!(cli.command, Command::Agent(_)) {
        "info,rustls=error,h2=warn,hyper=warn"
    } else {
        "warn,rustls=error"
    });
    match cli.command {
        Command::Login(args) => block_on(commands::login::run(args)),
        Command::Logout(args) => block_on(commands::logout::run(args)),
        Command::Status(args) => block_on(commands::status::run(args)),
        // One relay thread: kubectl's calls are few and light, and one thread answers them sooner.
        Command::Kubectl(args) => block_on_and_leave(1, commands::kubectl::run(args)),
        Command::Kubeconfig(args) => block_on(commands::kubeconfig::run(args)),
        // Synchronous: it runs on every kubectl invocation and must start fast.
        Command::Credential(args) => commands::credential::run(args),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Access(args) => block_on(commands::access::run(args)),
        Command::Gateway(args) => commands::gateway::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Sandbox(args) => commands::sandbox::run(args),
        Command::Completions(args) => commands::completions::run(args),
        Command::Man(args) => commands::man::run(args),
    }
}

/// Runs a future on a fresh multi-threaded runtime.
pub fn block_on<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    future: F,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Runs a server (the gateway, the persistent proxy) on a fresh runtime with `workers` threads;
/// each chooses its count (the gateway one per core by default, the proxy one). One worker
/// means a current-thread runtime: the same single thread of work, without the work-stealing
/// scheduler's cross-thread queues and wake-ups, which took 5–10 % of a relayed call's CPU
/// (BENCHMARKS.md, round 8).
/// Such a server must not block its thread: blocking work goes to `spawn_blocking`.
pub fn block_on_workers<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    workers: usize,
    future: F,
) -> anyhow::Result<T> {
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        runtime(workers)?
    };
    runtime.block_on(future)
}

/// `block_on_workers` for a command whose work is over when its future is (`ztk kubectl`
/// flushes, ships and removes its files before it returns): the runtime is then left to stop
/// as the process exits, instead of waiting for each of its idle threads to wake and end, which
/// took 1–2 ms per thread on a VM, after every kubectl command.
pub fn block_on_and_leave<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    workers: usize,
    future: F,
) -> anyhow::Result<T> {
    let runtime = runtime(workers)?;
    let result = runtime.block_on(future);
    runtime.shutdown_background();
    result
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
}

/// Logs go to stderr, quiet unless `ZTK_LOG` asks (e.g. `ZTK_LOG=debug`).
/// Logs to stderr, filtered by `ZTK_LOG` or `default`; colours only on a terminal.
fn init_logging(default: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZTK_LOG")
        // rustls warns on every client that sends an IP address as SNI (curl, wrk, some
        // libraries), which the TLS spec forbids but is harmless here: keep its errors only.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use tokio::runtime::{Handle, RuntimeFlavor};

    #[test]
    fn a_one_thread_server_runs_on_the_current_thread_and_more_on_workers() {
        let flavor = |workers| {
            super::block_on_workers(workers, async {
                // Blocking work still has a pool to go to.
                let answer = tokio::task::spawn_blocking(|| 42).await?;
                assert_eq!(answer, 42);
                Ok(Handle::current().runtime_flavor())
            })
            .unwrap()
        };
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
    }
}
