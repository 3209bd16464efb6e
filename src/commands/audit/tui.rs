//! `ztk audit tui`: the interactive audit browser (the app itself lives in `crate::tui`).

use anyhow::Result;

use crate::cli::UsageError;
use crate::protocol::View;
use crate::tui::app::App;
use crate::tui::source::{SourceKind, Sources};

#[derive(Debug, clap::Args)]
pub struct TuiArgs {
    /// The filter to start with, in the filter bar's language:
    /// `user:alice ns:prod verb:delete status:4xx since:1h some text`.
    #[arg(long, short = 'f', value_name = "QUERY", default_value = "")]
    filter: String,
    /// Start with commands (one row per command) or API calls.
    #[arg(long, value_enum, default_value = "commands")]
    view: View,
    /// Browse the gateway's authoritative log instead of the local one (the `r` key switches).
    #[arg(long)]
    remote: bool,
    /// Measure first-screen and key-press times on the local store, without a terminal, and
    /// print them.
    #[arg(long, hide = true)]
    bench: bool,
}

pub fn run(args: TuiArgs) -> Result<i32> {
    let source = if args.remote {
        SourceKind::Remote
    } else {
        SourceKind::Local
    };
    if args.bench {
        let store = super::local_store()?;
        crate::tui::bench::run(store, args.view, &args.filter)?;
        return Ok(0);
    }
    let app = App::new(source, args.view, &args.filter)
        .map_err(|e| UsageError(format!("--filter: {e}")))?;
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(
            "ztk audit tui needs a terminal; for a listing use `ztk audit list`".into(),
        )
        .into());
    }
    crate::tui::run(app, Sources::standard(None))?;
    Ok(0)
}
