//! Progress bars on a TTY for backup and restore: bytes, rate, ETA and dedup.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, or nothing when stderr is not a terminal.
pub struct Bar {
    bar: Option<ProgressBar>,
    logical: AtomicU64,
    stored: AtomicU64,
}

impl Bar {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Bar {
            bar,
            logical: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        }
    }

    fn set_total(&self, total: Option<u64>) {
        if let (Some(b), Some(t)) = (&self.bar, total) {
            b.set_length(t);
        }
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl hs_backup::Progress for Bar {
    fn start(&self, total: Option<u64>) {
        self.set_total(total);
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn dedup(&self, logical: u64, new: u64) {
        self.logical.store(logical, Ordering::Relaxed);
        self.stored.store(new, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if new > 0 {
                b.set_message(format!("dedup {:.1}x", logical as f64 / new as f64));
            }
        }
    }
    fn finish(&self) {
        self.done();
    }
}

impl hs_pitr::RestoreProgress for Bar {
    fn start(&self, total: u64) {
        self.set_total(Some(total));
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn finish(&self) {
        self.done();
    }
}
