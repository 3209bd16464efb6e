use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ztk::cli::Cli::parse();
    match ztk::cli::run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("ztk: error: {err:#}");
            let usage = err.chain().any(|e| {
                e.is::<ztk::cli::UsageError>() || e.is::<ztk::audit::filter::FilterError>()
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
