//! Progress of backup and restore: a bar on a terminal (bytes, rate, ETA, dedup), and
//! without one (cron, systemd) a line on stderr every `--progress-interval` seconds.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::cli::{GlobalArgs, OutputFormat};
use crate::output::human_bytes;

/// No ETA is shown before this much time has passed: the first seconds (a checkpoint,
/// the first uploads) say nothing about the rate, and an early estimate read "23h".
const ETA_AFTER: Duration = Duration::from_secs(5);

/// The counters both displays read.
#[derive(Default)]
struct Counts {
    done: AtomicU64,
    /// The expected total; 0 when unknown. Raised to `done` when the estimate was short.
    total: AtomicU64,
    logical: AtomicU64,
    stored: AtomicU64,
}

impl Counts {
    /// Adds `n` done bytes; keeps a known total at least what is done, so progress
    /// never reads more than 100% (the server's size estimate can be short). Returns
    /// (done, total), total 0 when unknown.
    fn advance(&self, n: u64) -> (u64, u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let raised = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t > 0 && t < done).then_some(done)
            });
        (done, raised.map_or_else(|t| t, |_| done))
    }
}

/// A progress display on stderr: a bar on a terminal, periodic lines otherwise, or
/// nothing (JSON output, or `--progress-interval 0` without a terminal).
pub struct Bar {
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
    /// The line writer's thread: dropping the sender stops it.
    lines: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    what: &'static str,
    interval: Duration,
    enabled: bool,
}

impl Bar {
    /// The display for `what` (`backup`, `restore`), as the global flags ask.
    pub fn new(g: &GlobalArgs, what: &'static str) -> Self {
        let enabled = g.output == OutputFormat::Human;
        let tty = enabled && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {steady_eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("steady_eta", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let total = s.len().unwrap_or(0);
                    let _ = w.write_str(&eta_text(s.pos(), total, s.elapsed()));
                }),
            );
            b
        });
        Bar {
            counts: Arc::new(Counts::default()),
            bar,
            lines: Mutex::new(None),
            what,
            interval: Duration::from_secs(g.progress_interval),
            enabled: enabled && !tty && g.progress_interval > 0,
        }
    }

    fn start_display(&self, total: Option<u64>) {
        if let Some(t) = total {
            self.counts.total.fetch_max(t, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            return;
        }
        if !self.enabled {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let (counts, what, interval) = (self.counts.clone(), self.what, self.interval);
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    let line = progress_line(what, &counts, started.elapsed());
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            });
        if let (Ok(handle), Ok(mut slot)) = (spawned, self.lines.lock()) {
            *slot = Some((tx, handle));
        }
    }

    fn inc(&self, n: u64) {
        let (_, total) = self.counts.advance(n);
        if let Some(b) = &self.bar {
            if b.length().is_some_and(|l| l < total) {
                b.set_length(total);
            }
            b.inc(n);
        }
    }

    fn set_dedup(&self, logical: u64, new: u64) {
        self.counts.logical.store(logical, Ordering::Relaxed);
        self.counts.stored.store(new, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if new > 0 {
                b.set_message(format!("dedup {:.1}x", logical as f64 / new as f64));
            }
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let taken = self.lines.lock().ok().and_then(|mut l| l.take());
        if let Some((tx, handle)) = taken {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.done();
    }
}

/// The ETA shown: `-` until [`ETA_AFTER`] has passed with some progress and a known
/// total, then the rest at the average rate so far (steadier than a recent rate).
fn eta_text(done: u64, total: u64, elapsed: Duration) -> String {
    if elapsed < ETA_AFTER || done == 0 || total == 0 {
        return "-".to_owned();
    }
    let rate = done as f64 / elapsed.as_secs_f64();
    let secs = (total.saturating_sub(done) as f64 / rate).round() as u64;
    format_secs(secs)
}

/// `45s`, `3m05s`, `2h07m`.
fn format_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One line for a log without a terminal: `backup progress: 1.2 GiB of 3.4 GiB (35%),
/// 41.0 MiB/s, ETA 55s, dedup 2.1x, 30s elapsed`.
fn progress_line(what: &str, c: &Counts, elapsed: Duration) -> String {
    let done = c.done.load(Ordering::Relaxed);
    let total = match c.total.load(Ordering::Relaxed) {
        0 => 0,
        t => t.max(done),
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut line = format!("{what} progress: {}", human_bytes(done));
    if total > 0 {
        let pct = (done as f64 * 100.0 / total as f64).min(100.0);
        line.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(total)));
    }
    line.push_str(&format!(", {}/s", human_bytes((done as f64 / secs) as u64)));
    if total > 0 {
        line.push_str(&format!(", ETA {}", eta_text(done, total, elapsed)));
    }
    let (logical, stored) = (
        c.logical.load(Ordering::Relaxed),
        c.stored.load(Ordering::Relaxed),
    );
    if stored > 0 {
        line.push_str(&format!(", dedup {:.1}x", logical as f64 / stored as f64));
    }
    line.push_str(&format!(", {} elapsed\n", format_secs(elapsed.as_secs())));
    line
}

impl hs_backup::Progress for Bar {
    fn start(&self, total: Option<u64>) {
        self.start_display(total);
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn dedup(&self, logical: u64, new: u64) {
        self.set_dedup(logical, new);
    }
    fn finish(&self) {
        self.done();
    }
}

impl hs_pitr::RestoreProgress for Bar {
    fn start(&self, total: u64) {
        self.start_display(Some(total));
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn finish(&self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_in_the_first_seconds_then_the_average_rate() {
        let gib = 1u64 << 30;
        // The "ETA 23h" of the first second of a backup: not shown.
        assert_eq!(eta_text(1 << 20, 180 << 20, Duration::from_secs(1)), "-");
        assert_eq!(eta_text(0, gib, Duration::from_secs(60)), "-");
        assert_eq!(eta_text(gib, 0, Duration::from_secs(60)), "-");
        // Half done in 10 s: 10 s to go.
        assert_eq!(eta_text(gib / 2, gib, Duration::from_secs(10)), "10s");
        assert_eq!(eta_text(gib / 4, gib, Duration::from_secs(100)), "5m00s");
        assert_eq!(format_secs(7620), "2h07m");
    }

    #[test]
    fn progress_never_reads_above_100_percent() {
        let c = Counts::default();
        c.total.store(183 << 20, Ordering::Relaxed);
        // The server's estimate was short: 184 MiB arrive.
        let (done, total) = c.advance(184 << 20);
        assert_eq!((done, total), (184 << 20, 184 << 20));
        let line = progress_line("backup", &c, Duration::from_secs(20));
        assert!(
            line.starts_with("backup progress: 184.0 MiB of 184.0 MiB (100%)"),
            "{line}"
        );
        c.stored.store(92 << 20, Ordering::Relaxed);
        c.logical.store(184 << 20, Ordering::Relaxed);
        let line = progress_line("backup", &c, Duration::from_secs(20));
        assert!(
            line.contains("dedup 2.0x") && line.ends_with("20s elapsed\n"),
            "{line}"
        );
        // Unknown total: bytes and rate only.
        let u = Counts::default();
        u.advance(1 << 20);
        let line = progress_line("restore", &u, Duration::from_secs(2));
        assert!(!line.contains('%') && !line.contains("ETA"), "{line}");
    }
}
