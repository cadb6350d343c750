//! Prometheus metrics for `wal stream --metrics-listen ADDR`: [`StreamMetrics`] counts what
//! the streamer reports through [`StreamObserver`] and renders it in the text exposition
//! format 0.0.4; hs-ops serves it (`hs_ops::bind_metrics`).
//!
//! Two lag views are exported. `lag_*` is measured against the flush position reported to
//! the server (what the replication slot may release: whole segments, or everything in
//! `--synchronous` mode). `durable_lag_*` also counts the in-progress segment written as
//! a `.partial`, which is what a restore could replay: the recovery point objective.
//! Lag seconds is the time since the server first reported WAL beyond that position,
//! taken from the server end positions the streamer saw; it is 0 when caught up.
//! LSNs are exported as byte numbers in float64 samples, exact up to 2^53 (8 PiB of WAL).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hs_proto::{Lsn, TimelineId};
use hs_repo::WalGap;

use crate::error::Error;
use crate::stream::StreamObserver;

/// Server end positions kept for the lag-seconds estimate.
const MAX_SAMPLES: usize = 4096;
/// Minimum spacing of kept samples (the estimate's resolution).
const SAMPLE_SPACING: Duration = Duration::from_millis(50);

/// Counters and gauges of one `wal stream`, updated through [`StreamObserver`]. Cheap to
/// update from the streaming loop (atomics; one short lock per position report).
///
/// [`render`](StreamMetrics::render) exports, each with a `deployment` label:
/// `pg_hardstorage_wal_{segments_archived,bytes_archived,partial_writes,gaps_recorded,
/// reconnects,timeline_switches}_total`, `..._streaming`, `..._timeline`,
/// `..._{received,flushed,durable,server}_lsn`, `..._lag_bytes`, `..._lag_seconds`,
/// `..._durable_lag_bytes`, `..._durable_lag_seconds`,
/// `..._last_segment_commit_timestamp_seconds` and `..._seconds_since_last_segment_commit`.
///
/// `lag_*` is measured against the flush position reported to the server (whole segments,
/// or everything with `--synchronous`); `durable_lag_*` also counts the `.partial` segment
/// (the recovery point objective). Lag seconds is the time since the server first
/// reported WAL beyond that position (0 when caught up). LSNs are byte numbers as float64
/// samples, exact up to 2^53.
#[derive(Debug)]
pub struct StreamMetrics {
    deployment: String,
    started: Instant,
    segments_archived: AtomicU64,
    bytes_archived: AtomicU64,
    partial_writes: AtomicU64,
    gaps_recorded: AtomicU64,
    reconnects: AtomicU64,
    timeline_switches: AtomicU64,
    timeline: AtomicU64,
    streaming: AtomicU64,
    received: AtomicU64,
    flushed: AtomicU64,
    server_end: AtomicU64,
    /// End of the newest `.partial` written (the received position when it was written).
    partial_end: AtomicU64,
    /// Unix time in milliseconds of the last segment commit; 0 = none yet.
    last_commit_ms: AtomicU64,
    /// (when, server end) samples, oldest first, each past the previous one.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// The metrics of [`StreamMetrics::render`], in output order: name (after
/// `pg_hardstorage_wal_`), type, help. `render_at` gives the values in the same order.
const METRICS: [(&str, &str, &str); 18] = [
    (
        "segments_archived_total",
        "counter",
        "Full WAL segments committed to the repository.",
    ),
    (
        "bytes_archived_total",
        "counter",
        "Bytes of WAL in full segments committed to the repository (uncompressed).",
    ),
    (
        "partial_writes_total",
        "counter",
        "Writes of the in-progress segment as a .partial object.",
    ),
    (
        "gaps_recorded_total",
        "counter",
        "WAL ranges recorded as missing (gone from the server before they were archived).",
    ),
    (
        "reconnects_total",
        "counter",
        "Times the connection was lost and a reconnect scheduled.",
    ),
    (
        "timeline_switches_total",
        "counter",
        "Timeline switches followed.",
    ),
    (
        "streaming",
        "gauge",
        "1 while connected and streaming, 0 while (re)connecting.",
    ),
    (
        "timeline",
        "gauge",
        "Timeline being streamed (0 before the first connection).",
    ),
    (
        "received_lsn",
        "gauge",
        "WAL position received from the server (LSN as a byte number).",
    ),
    (
        "flushed_lsn",
        "gauge",
        "WAL position reported flushed to the server: durable in the repository.",
    ),
    (
        "durable_lsn",
        "gauge",
        "WAL position durable in the repository, counting the .partial segment.",
    ),
    (
        "server_lsn",
        "gauge",
        "The server's end of WAL, as last reported in the stream.",
    ),
    (
        "lag_bytes",
        "gauge",
        "Bytes between the server's end of WAL and the flush position.",
    ),
    (
        "lag_seconds",
        "gauge",
        "Seconds since the server first reported WAL beyond the flush position (0 = caught up).",
    ),
    (
        "durable_lag_bytes",
        "gauge",
        "Bytes between the server's end of WAL and what is durable, counting the .partial segment.",
    ),
    (
        "durable_lag_seconds",
        "gauge",
        "Seconds since the server first reported WAL not yet durable, counting the .partial segment (the RPO).",
    ),
    (
        "last_segment_commit_timestamp_seconds",
        "gauge",
        "Unix time of the last full segment commit (0 = none since start).",
    ),
    (
        "seconds_since_last_segment_commit",
        "gauge",
        "Seconds since the last full segment commit (NaN = none since start).",
    ),
];

impl StreamMetrics {
    /// Metrics for `deployment` (its name becomes the `deployment` label).
    pub fn new(deployment: impl Into<String>) -> StreamMetrics {
        StreamMetrics {
            deployment: deployment.into(),
            started: Instant::now(),
            segments_archived: AtomicU64::new(0),
            bytes_archived: AtomicU64::new(0),
            partial_writes: AtomicU64::new(0),
            gaps_recorded: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            timeline_switches: AtomicU64::new(0),
            timeline: AtomicU64::new(0),
            streaming: AtomicU64::new(0),
            received: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            server_end: AtomicU64::new(0),
            partial_end: AtomicU64::new(0),
            last_commit_ms: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The deployment label.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// Full segments archived so far.
    pub fn segments_archived(&self) -> u64 {
        self.segments_archived.load(Ordering::Relaxed)
    }

    /// Bytes in `server_end - flushed`.
    pub fn lag_bytes(&self) -> u64 {
        let end = self.server_end.load(Ordering::Relaxed);
        end.saturating_sub(self.flushed.load(Ordering::Relaxed))
    }

    /// Whether the streamer is connected and streaming (not (re)connecting).
    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed) == 1
    }

    /// The server's end of WAL as last reported (LSN as a byte number; 0 before any).
    pub fn server_end_lsn(&self) -> u64 {
        self.server_end.load(Ordering::Relaxed)
    }

    /// The newest position durable in the repository, counting the `.partial` (LSN as
    /// a byte number).
    pub fn durable_lsn(&self) -> u64 {
        self.durable()
    }

    /// Seconds since the server first reported WAL beyond [`StreamMetrics::durable_lsn`]
    /// (0 when caught up): the recovery point objective, `durable_lag_seconds`.
    pub fn durable_lag_seconds(&self) -> f64 {
        self.lag_seconds_at(self.durable(), Instant::now())
    }

    /// The newest position durable in the repository, counting the partial segment.
    fn durable(&self) -> u64 {
        let flushed = self.flushed.load(Ordering::Relaxed);
        flushed.max(self.partial_end.load(Ordering::Relaxed))
    }

    /// Seconds since the server first reported WAL beyond `pos` (0 when caught up).
    fn lag_seconds_at(&self, pos: u64, now: Instant) -> f64 {
        if self.server_end.load(Ordering::Relaxed) <= pos {
            return 0.0;
        }
        let samples = match self.samples.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match samples.iter().find(|(_, end)| *end > pos) {
            Some((at, _)) => now.saturating_duration_since(*at).as_secs_f64(),
            // The server end we know is past `pos` but no kept sample is: the lag is at
            // least as old as the oldest sample (or the start).
            None => {
                let oldest = samples.front().map_or(self.started, |s| s.0);
                now.saturating_duration_since(oldest).as_secs_f64()
            }
        }
    }

    fn record_server_end(&self, end: u64, flushed: u64, now: Instant) {
        let mut samples = match self.samples.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Samples at or before the flush position no longer matter.
        while samples.front().is_some_and(|s| s.1 <= flushed) {
            samples.pop_front();
        }
        let len = samples.len();
        let Some(&(last_at, last_end)) = samples.back() else {
            samples.push_back((now, end));
            return;
        };
        if end <= last_end {
            return;
        }
        if len >= 2
            && (now.saturating_duration_since(last_at) < SAMPLE_SPACING || len >= MAX_SAMPLES)
        {
            // Too close to the previous sample, or no room: move the newest sample
            // forward, keeping the oldest, which decides the lag.
            if let Some(last) = samples.back_mut() {
                last.1 = end;
            }
        } else {
            samples.push_back((now, end));
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of the current values.
    pub fn render(&self) -> String {
        self.render_at(Instant::now(), SystemTime::now())
    }

    fn render_at(&self, now: Instant, wall: SystemTime) -> String {
        let label = format!("deployment=\"{}\"", escape_label(&self.deployment));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flushed = get(&self.flushed);
        let durable = self.durable();
        let server_end = get(&self.server_end);
        let last_ms = get(&self.last_commit_ms);
        let since = if last_ms == 0 {
            f64::NAN
        } else {
            let now_ms = unix_ms(wall);
            now_ms.saturating_sub(last_ms) as f64 / 1000.0
        };
        let values: [f64; METRICS.len()] = [
            get(&self.segments_archived) as f64,
            get(&self.bytes_archived) as f64,
            get(&self.partial_writes) as f64,
            get(&self.gaps_recorded) as f64,
            get(&self.reconnects) as f64,
            get(&self.timeline_switches) as f64,
            get(&self.streaming) as f64,
            get(&self.timeline) as f64,
            get(&self.received) as f64,
            flushed as f64,
            durable as f64,
            server_end as f64,
            server_end.saturating_sub(flushed) as f64,
            self.lag_seconds_at(flushed, now),
            server_end.saturating_sub(durable) as f64,
            self.lag_seconds_at(durable, now),
            last_ms as f64 / 1000.0,
            since,
        ];
        let mut out = String::with_capacity(4096);
        for ((name, kind, help), value) in METRICS.iter().zip(values) {
            let _ = writeln!(out, "# HELP pg_hardstorage_wal_{name} {help}");
            let _ = writeln!(out, "# TYPE pg_hardstorage_wal_{name} {kind}");
            let _ = writeln!(
                out,
                "pg_hardstorage_wal_{name}{{{label}}} {}",
                fmt_value(value)
            );
        }
        out
    }
}

impl StreamObserver for StreamMetrics {
    fn streaming(&self, timeline: TimelineId, start: Lsn) {
        self.timeline
            .store(u64::from(timeline.0), Ordering::Relaxed);
        self.streaming.store(1, Ordering::Relaxed);
        self.received.fetch_max(start.0, Ordering::Relaxed);
        self.flushed.fetch_max(start.0, Ordering::Relaxed);
    }

    fn segment_archived(&self, _segment: &str, bytes: u64) {
        self.segments_archived.fetch_add(1, Ordering::Relaxed);
        self.bytes_archived.fetch_add(bytes, Ordering::Relaxed);
        self.last_commit_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    fn partial_written(&self, _segment: &str, _bytes: u64) {
        self.partial_writes.fetch_add(1, Ordering::Relaxed);
        // The partial holds everything received in its segment: the streamer reports
        // positions after every batch, and writes partials between batches.
        let received = self.received.load(Ordering::Relaxed);
        self.partial_end.fetch_max(received, Ordering::Relaxed);
    }

    fn positions(&self, received: Lsn, flushed: Lsn, server_end: Lsn) {
        self.received.store(received.0, Ordering::Relaxed);
        self.flushed.fetch_max(flushed.0, Ordering::Relaxed);
        let end = server_end.0.max(received.0);
        self.server_end.fetch_max(end, Ordering::Relaxed);
        self.record_server_end(end, flushed.0, Instant::now());
    }

    fn gap(&self, _gap: &WalGap) {
        self.gaps_recorded.fetch_add(1, Ordering::Relaxed);
    }

    fn timeline_switch(&self, _from: TimelineId, to: TimelineId, _at: Lsn) {
        self.timeline_switches.fetch_add(1, Ordering::Relaxed);
        self.timeline.store(u64::from(to.0), Ordering::Relaxed);
    }

    fn reconnecting(&self, _error: &Error, _delay: Duration) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.streaming.store(0, Ordering::Relaxed);
    }
}

/// A [`StreamObserver`] that forwards every event to two observers, first to `.0`, then
/// to `.1` (for example a logger and a [`StreamMetrics`]).
#[derive(Clone, Copy)]
pub struct Tee<'a>(pub &'a dyn StreamObserver, pub &'a dyn StreamObserver);

impl std::fmt::Debug for Tee<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tee(..)")
    }
}

impl StreamObserver for Tee<'_> {
    fn streaming(&self, timeline: TimelineId, start: Lsn) {
        self.0.streaming(timeline, start);
        self.1.streaming(timeline, start);
    }
    fn segment_archived(&self, segment: &str, bytes: u64) {
        self.0.segment_archived(segment, bytes);
        self.1.segment_archived(segment, bytes);
    }
    fn partial_written(&self, segment: &str, bytes: u64) {
        self.0.partial_written(segment, bytes);
        self.1.partial_written(segment, bytes);
    }
    fn positions(&self, received: Lsn, flushed: Lsn, server_end: Lsn) {
        self.0.positions(received, flushed, server_end);
        self.1.positions(received, flushed, server_end);
    }
    fn gap(&self, gap: &WalGap) {
        self.0.gap(gap);
        self.1.gap(gap);
    }
    fn timeline_switch(&self, from: TimelineId, to: TimelineId, at: Lsn) {
        self.0.timeline_switch(from, to, at);
        self.1.timeline_switch(from, to, at);
    }
    fn reconnecting(&self, error: &Error, delay: Duration) {
        self.0.reconnecting(error, delay);
        self.1.reconnecting(error, delay);
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A sample value in the exposition format (`NaN`, `+Inf`, integers without `.0`).
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const SEG: u64 = 16 * 1024 * 1024;

    fn value(text: &str, name: &str) -> String {
        let prefix = format!("pg_hardstorage_wal_{name}{{deployment=\"main\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .to_owned()
    }

    #[test]
    fn render_counts_and_lags() {
        let m = StreamMetrics::new("main");
        let t0 = Instant::now();
        let text = m.render_at(t0, SystemTime::now());
        assert_eq!(value(&text, "segments_archived_total"), "0");
        assert_eq!(value(&text, "lag_seconds"), "0");
        assert_eq!(value(&text, "seconds_since_last_segment_commit"), "NaN");
        assert_eq!(value(&text, "streaming"), "0");

        m.streaming(TimelineId(3), Lsn(5 * SEG));
        // The server was at 5*SEG+100 at t0, then further at t0+2s.
        m.received.store(5 * SEG + 100, Ordering::Relaxed);
        m.server_end.store(5 * SEG + 100, Ordering::Relaxed);
        m.record_server_end(5 * SEG + 100, 5 * SEG, t0);
        m.record_server_end(7 * SEG, 5 * SEG, t0 + Duration::from_secs(2));
        m.server_end.store(7 * SEG, Ordering::Relaxed);
        m.received.store(6 * SEG + 10, Ordering::Relaxed);
        m.segment_archived("000000030000000000000005", SEG);
        m.flushed.store(6 * SEG, Ordering::Relaxed);
        m.partial_written("000000030000000000000006", 10);
        m.gap(&WalGap {
            from_segment: "000000030000000000000001".into(),
            to_segment: "000000030000000000000002".into(),
            reason: "test".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        });
        m.timeline_switch(TimelineId(3), TimelineId(4), Lsn(6 * SEG));

        let text = m.render_at(t0 + Duration::from_secs(5), SystemTime::now());
        assert_eq!(value(&text, "segments_archived_total"), "1");
        assert_eq!(value(&text, "bytes_archived_total"), SEG.to_string());
        assert_eq!(value(&text, "partial_writes_total"), "1");
        assert_eq!(value(&text, "gaps_recorded_total"), "1");
        assert_eq!(value(&text, "timeline_switches_total"), "1");
        assert_eq!(value(&text, "timeline"), "4");
        assert_eq!(value(&text, "streaming"), "1");
        assert_eq!(value(&text, "flushed_lsn"), (6 * SEG).to_string());
        assert_eq!(value(&text, "durable_lsn"), (6 * SEG + 10).to_string());
        assert_eq!(value(&text, "server_lsn"), (7 * SEG).to_string());
        assert_eq!(value(&text, "lag_bytes"), SEG.to_string());
        assert_eq!(value(&text, "durable_lag_bytes"), (SEG - 10).to_string());
        // The first sample beyond 6*SEG is the one at t0+2s: 3 s ago.
        assert_eq!(value(&text, "lag_seconds"), "3");
        assert_eq!(value(&text, "durable_lag_seconds"), "3");
        let since: f64 = value(&text, "seconds_since_last_segment_commit")
            .parse()
            .unwrap();
        assert!((0.0..5.0).contains(&since), "{since}");
        let ts: f64 = value(&text, "last_segment_commit_timestamp_seconds")
            .parse()
            .unwrap();
        assert!(ts > 1.7e9, "{ts}");

        // Every sample has HELP and TYPE lines right before it.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 3, 0);
        for c in lines.chunks(3) {
            let name = c[2].split('{').next().unwrap();
            assert_eq!(c[0].split(' ').nth(2), Some(name), "{c:?}");
            assert!(c[1].starts_with(&format!("# TYPE {name} ")), "{c:?}");
            assert_eq!(
                name.ends_with("_total"),
                c[1].ends_with(" counter"),
                "{c:?}"
            );
        }

        // Caught up: lag 0; reconnecting: streaming 0.
        m.flushed.store(7 * SEG, Ordering::Relaxed);
        let err = Error::of_kind(ErrorKind::Postgres, "unreachable.test", "gone");
        m.reconnecting(&err, Duration::from_secs(1));
        let text = m.render_at(t0 + Duration::from_secs(6), SystemTime::now());
        assert_eq!(value(&text, "lag_seconds"), "0");
        assert_eq!(value(&text, "lag_bytes"), "0");
        assert_eq!(value(&text, "reconnects_total"), "1");
        assert_eq!(value(&text, "streaming"), "0");
    }

    #[test]
    fn samples_stay_bounded_and_keep_the_oldest() {
        let m = StreamMetrics::new("main");
        let t0 = Instant::now();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            m.record_server_end(1000 + i, 0, t0 + Duration::from_millis(100 * i));
        }
        let s = m.samples.lock().unwrap();
        assert!(s.len() <= MAX_SAMPLES);
        assert_eq!(s.front().map(|x| x.0), Some(t0));
        assert_eq!(
            s.back().map(|x| x.1),
            Some(1000 + 3 * MAX_SAMPLES as u64 - 1)
        );
        drop(s);
        // Flushing past samples drops them.
        m.record_server_end(5_000_000, 4_000_000, t0 + Duration::from_secs(10_000));
        assert_eq!(m.samples.lock().unwrap().len(), 1);
    }

    #[test]
    fn labels_and_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.25), "0.25");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
    }
}
