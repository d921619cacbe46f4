//! The `lm4ve` binary: parses the command line, wires config → engine → stages, prints
//! results. Exit status: 0 ok, 1 a stage failed, 2 bad usage or bad config.

mod bench_cmd;
mod bench_image;
mod bench_video;
mod cli;
mod commands;
mod cpu_threads;
mod guard;
mod job;
mod llm_cmd;
mod open;
mod plan_cmd;
mod predictions_cmd;
mod remote_cmd;
mod report_cmd;
mod submit_cmd;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    // lm4ve only reads HDF5 files. libhdf5's file locks fail on many NFS mounts, and a
    // lock can outlive its writer when a forked child inherited the descriptor; the
    // ScanObjectNN loaders in Python set the same variable. Set before any HDF5 call and
    // before any thread exists; a user's own setting wins.
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
    }
    quiet_on_closed_output();
    let matches = cli::Cli::command().get_matches();
    let mut cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // `cache verify --remote` means "verify the remote"; LM4VE_REMOTE in the environment
    // only says which remote, so tell the two apart.
    cli.remote_flag = remote_on_command_line(&matches);
    // clap keeps only the last occurrence of a global option, so
    // `lm4ve --remote URL cache verify --remote` would lose the URL: take them all.
    let given = remote_args(std::env::args_os().skip(1));
    if !given.is_empty() {
        cli.remote = given;
    }
    let level = if cli.quiet { "warn" } else { "info" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // The storage client's own retry chatter (and, at debug level, the HTTP stack's) can
    // name the remote's URL, which lm4ve never logs: lm4ve reports failures itself.
    let user_filter = std::env::var("RUST_LOG").unwrap_or_default();
    for target in [
        "object_store",
        "reqwest",
        "hyper",
        "hyper_util",
        "h2",
        "rustls",
    ] {
        if !user_filter.contains(target) {
            if let Ok(d) = format!("{target}=warn").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `pipeline run --concurrent-stages K`: K stages share the threads, so candle's pools
    // (process-wide, sized once) get a K-th each; rayon's global pool stays whole for the
    // data stages, whose units it schedules across whatever runs.
    let stages_at_once = match &cli.command {
        cli::Command::Pipeline(cli::PipelineCmd::Run(args)) => usize::from(args.concurrent_stages),
        _ => 1,
    }
    .max(1);
    if cli.threads.is_none() && stages_at_once > 1 {
        cpu_threads::size_candle_pool(cores / stages_at_once);
    }
    if let Some(n) = cli.threads {
        let cap = (4 * cores).max(16);
        if n == 0 || n > cap {
            eprintln!(
                "error: -j {n} (--threads, LM4VE_THREADS): use 1 to {cap} ({cores} cores here; at most 4 threads a core, or 16); leave it out for one thread a core"
            );
            return ExitCode::from(2);
        }
        // candle's element-wise pool follows -j (cpu_threads.rs); before any thread exists.
        cpu_threads::size_candle_pool(n / stages_at_once);
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: --threads {n}: {e}");
            return ExitCode::from(2);
        }
    }
    // MKL: one thread whatever -j says, reproducible mode (cpu_threads.rs); no-op without `mkl`.
    cpu_threads::configure_mkl();
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

/// A closed or full stdout (`lm4ve … | head -1`, `> /dev/full`) ends the process quietly
/// instead of with a panic (exit 101): `print!` panics with "failed printing to stdout" when
/// the write fails. A reader that went away (EPIPE) gets what git's SIGPIPE death gives the
/// shell, status 141 and no message; any other write error (ENOSPC) is one line on stderr
/// and status 1. The cache stays consistent: every write in it is atomic, and a killed run
/// resumes.
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        for stream in ["stdout", "stderr"] {
            if let Some(why) = msg.strip_prefix(&format!("failed printing to {stream}: ")) {
                if why.contains("os error 32") || why.contains("Broken pipe") {
                    std::process::exit(141);
                }
                if stream == "stdout" {
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {why}");
                }
                std::process::exit(1);
            }
        }
        default(info);
    }));
}

fn remote_on_command_line(m: &clap::ArgMatches) -> bool {
    if m.value_source("remote") == Some(clap::parser::ValueSource::CommandLine) {
        return true;
    }
    m.subcommand()
        .is_some_and(|(_, sub)| remote_on_command_line(sub))
}

/// Every `--remote [URL]` of the command line, in order (`""` for a bare flag). An optional
/// value is the next argument unless it starts with `-` (clap's rule; a subcommand name
/// there would have failed to parse).
fn remote_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix("--remote=") {
            out.push(v.to_string());
        } else if a == "--remote" {
            match args.get(i + 1) {
                Some(v) if !v.starts_with('-') => {
                    out.push(v.clone());
                    i += 1;
                }
                _ => out.push(String::new()),
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_remote_occurrence_is_kept() {
        let args = |s: &str| super::remote_args(s.split(' ').map(Into::into));
        assert_eq!(
            args("--remote s3://b/p cache verify --remote"),
            vec!["s3://b/p".to_string(), String::new()]
        );
        assert_eq!(args("cache gc --remote --dry-run"), vec![String::new()]);
        assert_eq!(args("--remote=/x pipeline run"), vec!["/x".to_string()]);
        assert!(args("pipeline run -- --remote x").is_empty());
    }
}
