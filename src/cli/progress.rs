//! Progress display: an indicatif bar on a terminal, periodic plain lines otherwise (cron),
//! nothing with `--quiet`, `--json` or `--no-progress`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vault::progress::{EntryStatus, Progress, Unit};

/// Progress display plus, at `-v`, a list of the files a snapshot found new or changed.
pub struct CliProgress {
    display: Display,
    verbosity: u8,
}

/// How progress is shown.
enum Display {
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
    /// Picks the display for the current stderr; `verbosity` ≥ 1 lists new and changed files,
    /// ≥ 2 unchanged ones too.
    pub fn new(enabled: bool, verbosity: u8) -> Self {
        let display = if !enabled {
            Display::Silent
        } else if std::io::stderr().is_terminal() {
            Display::Bar(ProgressBar::with_draw_target(
                None,
                ProgressDrawTarget::stderr(),
            ))
        } else {
            Display::Lines {
                done: AtomicU64::new(0),
                items: AtomicU64::new(0),
                last: Mutex::new(Instant::now()),
                phase: Mutex::new((String::new(), Unit::Items)),
            }
        };
        Self { display, verbosity }
    }

    fn maybe_line(&self) {
        if let Display::Lines {
            done,
            items,
            last,
            phase,
        } = &self.display
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
        match &self.display {
            Display::Silent => {}
            Display::Bar(bar) => {
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
            Display::Lines {
                done, items, phase, ..
            } => {
                done.store(0, Ordering::Relaxed);
                items.store(0, Ordering::Relaxed);
                *phase.lock().unwrap_or_else(|p| p.into_inner()) = (name.to_string(), unit);
            }
        }
    }

    fn advance(&self, n: u64) {
        match &self.display {
            Display::Silent => {}
            Display::Bar(bar) => bar.inc(n),
            Display::Lines { done, .. } => {
                done.fetch_add(n, Ordering::Relaxed);
                self.maybe_line();
            }
        }
    }

    fn item_done(&self, _bytes: u64) {
        match &self.display {
            Display::Silent => {}
            Display::Bar(bar) => {
                let n: u64 = bar.message().parse().unwrap_or(0) + 1;
                bar.set_message(format!("{n}"));
            }
            Display::Lines { items, .. } => {
                items.fetch_add(1, Ordering::Relaxed);
                self.maybe_line();
            }
        }
    }

    fn warn(&self, message: &str) {
        // Problems are shown even with --quiet: they change the exit code.
        match &self.display {
            Display::Bar(bar) => bar.println(format!("warning: {message}")),
            _ => eprintln!("warning: {message}"),
        }
    }

    fn finish_phase(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }

    fn wants_entries(&self) -> bool {
        self.verbosity > 0
    }

    fn entry(&self, status: EntryStatus, path: &std::path::Path) {
        let word = match status {
            EntryStatus::New => "new",
            EntryStatus::Changed => "modified",
            EntryStatus::Unchanged if self.verbosity >= 2 => "unchanged",
            EntryStatus::Unchanged => return,
        };
        let line = format!("{word:<9} {}", vault::quote::quote_path(path));
        match &self.display {
            Display::Bar(bar) => bar.println(line),
            _ => {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        }
    }
}
