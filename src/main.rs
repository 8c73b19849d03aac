//! The `vault` binary: parses the command line, sets up logging, runs, maps errors to exit codes.

mod cli;

use std::io::IsTerminal;

fn main() {
    limit_malloc_arenas();
    cli::raise_fd_limit();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = cli::wants_json(&args);
    std::process::exit(cli::main_run(&args, json));
}

/// glibc gives threads their own malloc arenas (up to 8 per core) and keeps memory freed in
/// each: with rayon workers, RocksDB's threads and the upload threads, peak RSS was up to twice
/// the live heap. Two arenas keep RSS close to the heap at no measurable cost in speed
/// (`docs/decisions.md`, D25). Must run before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed threshold: buffers of 1 MiB and more (packs, pack headers) are mapped and
        // returned to the system when freed. glibc's default raises the threshold after each
        // such free, after which large buffers come from the heap and stay in RSS.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn init_logging(g: &cli::GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 | 1 => "warn",
            2 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vault={level}")));
    // Colour only on a terminal, and never when NO_COLOR is set: logs written into a pipe or a
    // file must not carry escape codes.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
}
