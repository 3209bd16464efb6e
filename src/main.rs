use std::process::ExitCode;

use clap::Parser;

// Every relayed call allocates for its headers, TLS records and audit record on two or three
// threads: mimalloc costs less CPU there than glibc's malloc (see BENCHMARKS.md). Its build
// settings are in .cargo/config.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
