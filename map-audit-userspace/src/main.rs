//! The `map-audit` command.

use clap::Parser;
use map_audit::commands::{check, cli, config_file, go_maps, report, run, watch};

fn main() {
    let argv = match config_file::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(err) => {
            eprintln!("map-audit: {err:#}");
            std::process::exit(1);
        }
    };
    let cli = cli::Cli::parse_from(argv);
    // --kernel-log shows the eBPF programs' records (their target is the eBPF crate's
    // module path, `map_audit::...`) unless RUST_LOG says otherwise.
    let kernel_log = matches!(&cli.command, cli::Command::Run(args) if args.kernel_log);
    let default_filter = if kernel_log {
        "warn,map_audit=debug"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
    let code = match cli.command {
        cli::Command::Check => check::run(),
        cli::Command::Run(args) => exit_code(run::run(*args)),
        cli::Command::GoMaps(args) => exit_code(go_maps::run::run(args)),
        cli::Command::Watch(args) => exit_code(watch::run(*args)),
        cli::Command::Report(args) => exit_code(report::run(&args)),
    };
    std::process::exit(code);
}

/// 1 for an error, 2 for an option this kernel cannot serve (as for a usage error).
fn exit_code(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|err| {
        eprintln!("map-audit: {err:#}");
        if err.is::<map_audit::kernel::kernel_support::NotOnThisKernel>() {
            2
        } else {
            1
        }
    })
}
