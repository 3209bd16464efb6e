//! `ztk man DIR` (hidden): write man pages for ztk and every subcommand, generated from the
//! clap definitions.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

/// Write man pages into a directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the pages (ztk.1, ztk-login.1, ...).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<i32> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let cmd = crate::cli::Cli::command();
    write_pages(&cmd, "ztk", &args.dir)?;
    Ok(0)
}

/// Renders the page of `cmd` (named `name`) and of each visible subcommand into memory.
pub fn pages(cmd: &clap::Command, name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    cmd.build();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    out.push((format!("{name}.1"), buf));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        out.extend(pages(sub, &format!("{name}-{}", sub.get_name()))?);
    }
    Ok(out)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    for (file, data) in pages(cmd, name)? {
        let path = dir.join(file);
        std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
