//! Progress display: an indicatif bar on a terminal, periodic plain lines otherwise (cron),
//! nothing with `--quiet`, `--json` or `--no-progress`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vault::progress::{Progress, Unit};

/// How progress is shown.
pub enum CliProgress {
    /// Nothing at all.
    Silent,
    /// A live bar on stderr.
    Bar(ProgressBar),
    /// A line every interval on stderr.
    Lines {
        /// Done so far in the current phase.
        done: AtomicU64,
        /// Items finished.
        items: AtomicU64,
        /// When the last line was printed.
        last: Mutex<Instant>,
        /// Current phase name and unit.
        phase: Mutex<(String, Unit)>,
    },
}

impl CliProgress {
    /// Picks the display for the current stderr.
    pub fn new(enabled: bool) -> Self {
        if !enabled {
            return CliProgress::Silent;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            CliProgress::Bar(bar)
        } else {
            CliProgress::Lines {
                done: AtomicU64::new(0),
                items: AtomicU64::new(0),
                last: Mutex::new(Instant::now()),
                phase: Mutex::new((String::new(), Unit::Items)),
            }
        }
    }

    fn maybe_line(&self) {
        if let CliProgress::Lines {
            done,
            items,
            last,
            phase,
        } = self
        {
            let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
            if l.elapsed() >= Duration::from_secs(30) {
                *l = Instant::now();
                let (name, unit) = &*phase.lock().unwrap_or_else(|p| p.into_inner());
                let d = done.load(Ordering::Relaxed);
                let amount = match unit {
                    Unit::Bytes => super::output::bytes(d),
                    Unit::Items => d.to_string(),
                };
                eprintln!("{name}: {amount}, {} items", items.load(Ordering::Relaxed));
            }
        }
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str, total: Option<u64>, unit: Unit) {
        match self {
            CliProgress::Silent => {}
            CliProgress::Bar(bar) => {
                let tmpl = match (total.is_some(), unit) {
                    (true, Unit::Bytes) => {
                        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}"
                    }
                    (false, Unit::Bytes) => {
                        "{prefix} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec} {msg}"
                    }
                    (true, Unit::Items) => {
                        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"
                    }
                    (false, Unit::Items) => "{prefix} [{elapsed_precise}] {spinner} {pos} {msg}",
                };
                if let Ok(style) = ProgressStyle::with_template(tmpl) {
                    bar.set_style(style);
                }
                bar.reset();
                bar.set_length(total.unwrap_or(0));
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            CliProgress::Lines {
                done, items, phase, ..
            } => {
                done.store(0, Ordering::Relaxed);
                items.store(0, Ordering::Relaxed);
                *phase.lock().unwrap_or_else(|p| p.into_inner()) = (name.to_string(), unit);
            }
        }
    }

    fn advance(&self, n: u64) {
        match self {
            CliProgress::Silent => {}
            CliProgress::Bar(bar) => bar.inc(n),
            CliProgress::Lines { done, .. } => {
                done.fetch_add(n, Ordering::Relaxed);
                self.maybe_line();
            }
        }
    }

    fn item_done(&self, _bytes: u64) {
        match self {
            CliProgress::Silent => {}
            CliProgress::Bar(bar) => {
                let n: u64 = bar.message().parse().unwrap_or(0) + 1;
                bar.set_message(format!("{n}"));
            }
            CliProgress::Lines { items, .. } => {
                items.fetch_add(1, Ordering::Relaxed);
                self.maybe_line();
            }
        }
    }

    fn warn(&self, message: &str) {
        // Problems are shown even with --quiet: they change the exit code.
        match self {
            CliProgress::Bar(bar) => bar.println(format!("warning: {message}")),
            _ => eprintln!("warning: {message}"),
        }
    }

    fn finish_phase(&self) {
        if let CliProgress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
