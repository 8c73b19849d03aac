//! The `vault` binary: parses the command line, sets up logging, runs, maps errors to exit codes.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let level = if cli.global.quiet {
        "error"
    } else {
        match cli.global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vault={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) if cli::is_broken_pipe(&e) => cli::exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    };
    std::process::exit(code);
}
