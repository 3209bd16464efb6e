//! `ztk completions SHELL`: shell completion scripts, generated from the clap definitions.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: Args) -> Result<i32> {
    let mut out = std::io::stdout();
    generate(args.shell, &mut out);
    Ok(0)
}

pub fn generate(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "ztk", out);
}
