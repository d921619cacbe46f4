//! The `lm4ve` binary: parses the command line, wires config → engine → stages, prints
//! results. Exit status: 0 ok, 1 a stage failed, 2 bad usage or bad config.

mod cli;
mod commands;
mod llm_cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // lm4ve only reads HDF5 files. libhdf5's file locks fail on many NFS mounts, and a
    // lock can outlive its writer when a forked child inherited the descriptor; the
    // ScanObjectNN loaders in Python set the same variable. Set before any HDF5 call and
    // before any thread exists; a user's own setting wins.
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
    }
    let cli = cli::Cli::parse();
    let level = if cli.quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: --threads {n}: {e}");
            return ExitCode::from(2);
        }
    }
    lm4ve_stages::train::device::set_preference(match cli.device {
        cli::DeviceArg::Auto => lm4ve_stages::train::device::DevicePref::Auto,
        cli::DeviceArg::Cpu => lm4ve_stages::train::device::DevicePref::Cpu,
        cli::DeviceArg::Cuda => lm4ve_stages::train::device::DevicePref::Cuda,
    });
    match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_status(&e))
        }
    }
}
