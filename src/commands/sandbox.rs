//! `ztk sandbox serve`: the built-in sandbox cluster on its own port, with a kubeconfig for it.
//! Useful to try kubectl, to point a gateway's `kubeconfig` cluster at, and for benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// Run the built-in sandbox cluster on its own (no gateway in front).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SandboxCommand,
}

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum SandboxCommand {
    /// Serve the sandbox until interrupted, and write a kubeconfig that reaches it.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        listen: SocketAddr,
        /// Where to write the kubeconfig (mode 0600: it holds the sandbox's credential).
        #[arg(long, value_name = "FILE")]
        kubeconfig: PathBuf,
        /// Put a client certificate in the kubeconfig instead of a bearer token.
        #[arg(long)]
        client_cert: bool,
        /// Serve one self-signed CA:TRUE certificate (also the kubeconfig's CA), as many lab
        /// clusters and appliances do.
        #[arg(long)]
        self_signed: bool,
        /// A name or address for the server certificate (repeatable; default 127.0.0.1 and
        /// localhost). With names the URL does not carry, the kubeconfig needs `tls-server-name`.
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
    },
}

pub fn run(args: Args) -> Result<i32> {
    let SandboxCommand::Serve {
        listen,
        kubeconfig,
        client_cert,
        self_signed,
        tls_names,
    } = args.command;
    crate::cli::block_on(async move {
        let tls = crate::sandbox::server::ServeTls {
            names: tls_names,
            self_signed,
        };
        let server = crate::sandbox::server::start_with(listen, tls)
            .await
            .with_context(|| format!("cannot serve the sandbox on {listen}"))?;
        let config = server.kubeconfig("ztk-sandbox", client_cert);
        crate::fsutil::write_private(&kubeconfig, serde_yaml_ng::to_string(&config)?.as_bytes())
            .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
        println!(
            "ztk sandbox: kubeconfig written to {}",
            kubeconfig.display()
        );
        println!("ztk sandbox: listening on {}", server.url());
        use std::io::Write;
        std::io::stdout().flush()?;
        let _ = tokio::signal::ctrl_c().await;
        Ok(0)
    })
}
